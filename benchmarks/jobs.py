"""Jobs across a 2-node loopback mesh: overhead per trivial subtask, and parallel efficiency on mandelbrot.

    python benchmarks/jobs.py [--tiles 256] [--size 4096] [--trivial 2000]

Efficiency = (sum of single-thread tile times in the same sandbox) / (wall time x cores), with
replicas 1; the replicas 2 run should take about twice as long. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshnode.config import NodeConfig  # noqa: E402
from meshnode.core.manifest import Replication, TaskLimits  # noqa: E402
from meshnode.jobs import JobOptions  # noqa: E402
from meshnode.node import MeshNode, open_node  # noqa: E402
from meshnode.sandbox import Sandbox  # noqa: E402

TASKS = Path(__file__).resolve().parents[1] / "tasks_wasm"
LIMITS = TaskLimits(10**12, 256 << 20, 600_000, 64 << 20)
EMPTY = wasmtime.wat2wasm(
    '(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 1024))'
    ' (func (export "run") (param i32 i32) (result i64) (i64.const 0x0000040000000000)))'
)


def tiles(size: int, count: int, max_iter: int) -> list[bytes]:
    side = int(count**0.5)
    t = size // side
    return [json.dumps({"x0": x, "y0": y, "w": t, "h": t, "width": size, "height": size, "max_iter": max_iter}).encode()
            for y in range(0, size, t) for x in range(0, size, t)]  # fmt: skip


def single_thread_seconds(module: bytes, inputs: list[bytes]) -> float:
    with Sandbox() as sb:
        m = sb.load(module)
        return sum(sb.run_sync(m, data, LIMITS).seconds for data in inputs)


async def run_job(nodes: list[MeshNode], module: bytes, inputs: list[bytes], replication: Replication) -> float:
    start = time.perf_counter()
    job = await nodes[0].submit(module, inputs, JobOptions(limits=LIMITS, replication=replication))
    while not job.owner.finished:
        await trio.sleep(0.01)
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    mandel = (TASKS / "mandelbrot.wasm").read_bytes()
    work = tiles(args.size, args.tiles, args.max_iter)
    serial = single_thread_seconds(mandel, work)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            nodes: list[MeshNode] = []
            for i in range(2):
                boot = tuple(nodes[0].dial_addrs) if nodes else ()
                config = NodeConfig(data_dir=Path(tmp) / f"n{i}", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                                    api=None, slots=1, bootstrap=boot)  # fmt: skip
                nodes.append(await stack.enter_async_context(open_node(config)))
            while not all(n.table.alive() for n in nodes):
                await trio.sleep(0.05)
            trivial = [b""] * args.trivial
            t1 = await run_job(nodes, EMPTY, trivial, Replication(1, 1, 1))
            w1 = await run_job(nodes, mandel, work, Replication(1, 1, 1))
            w2 = await run_job(nodes, mandel, work, Replication(2, 2, 2))
            ran = [n.jobs.executor.runs for n in nodes]
    print(f"2-node mesh on loopback, 1 slot per node, {cores} cores; mandelbrot {args.size}x{args.size}, "
          f"{len(work)} tiles, max_iter {args.max_iter}\n")  # fmt: skip
    print("| figure | value |\n|---|---|")
    print(f"| overhead per trivial subtask, replicas 1 ({args.trivial} subtasks) | {t1 / args.trivial * 1e6:,.0f} µs |")
    print(f"| single-thread sum of tile times (sandbox) | {serial:.2f} s |")
    print(f"| wall, replicas 1 | {w1:.2f} s |")
    print(f"| **parallel efficiency, replicas 1** | **{serial / (w1 * cores):.2f}** |")
    print(f"| wall, replicas 2 (quorum 2) | {w2:.2f} s ({w2 / w1:.2f}x replicas 1) |")
    print(f"| subtasks run by each node over the three jobs | {ran} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--tiles", type=int, default=256)
    p.add_argument("--max-iter", type=int, default=256)
    p.add_argument("--trivial", type=int, default=2000)
    trio.run(main, p.parse_args())
