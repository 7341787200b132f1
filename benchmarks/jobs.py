"""Jobs across a 2-node loopback mesh: overhead per trivial subtask, and parallel efficiency on mandelbrot.

    python benchmarks/jobs.py [--tiles 256] [--size 4096] [--trivial 2000] [--processes]

Efficiency = (sum of single-thread tile times in the same sandbox) / (wall time x cores), with
replicas 1 (the median of three jobs); replicas 2 (also the median of three) should take about twice
as long. Each job runs on a fresh mesh (no result cache hits), warmed up first by a small job of each
module, as benchmarks/peers.py warms up the reference systems (start-up is not in the figures). With
``--processes`` the second node is a ``python -m meshnode`` process of its own, as on a LAN;
otherwise both nodes share this process (and its GIL). The owner freezes its start-up objects out of the
garbage collector's sight once its node is up, as ``meshnode run`` does (node/memory.py). Prints a Markdown
report.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import psutil
import trio
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshnode.config import NodeConfig  # noqa: E402
from meshnode.core.manifest import Replication, TaskLimits  # noqa: E402
from meshnode.core.manifest import JobOptions  # noqa: E402
from meshnode.node.memory import freeze_start_up  # noqa: E402
from meshnode.node.mesh_node import MeshNode, open_node  # noqa: E402
from meshnode.sandbox.runtime import Sandbox  # noqa: E402

TASKS = Path(__file__).resolve().parents[1] / "tasks_wasm"
LIMITS = TaskLimits(10**12, 256 << 20, 600_000, 64 << 20)
EMPTY = bytes(wasmtime.wat2wasm(
    '(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 1024))'
    ' (func (export "run") (param i32 i32) (result i64) (i64.const 0x0000040000000000)))'
))


def tiles(size: int, count: int, max_iter: int) -> list[bytes]:
    side = int(count**0.5)
    t = size // side
    return [json.dumps({"x0": x, "y0": y, "w": t, "h": t, "width": size, "height": size, "max_iter": max_iter}).encode()
            for y in range(0, size, t) for x in range(0, size, t)]  # fmt: skip


def single_thread_seconds(module: bytes, inputs: list[bytes]) -> float:
    with Sandbox() as sb:
        m = sb.load(module)
        return sum(sb.run_sync(m, data, LIMITS).seconds for data in inputs)


async def warm_up(owner: MeshNode) -> None:
    """As benchmarks/peers.py warms the reference systems: a small job of each module (inputs the
    measured jobs do not have), so both nodes have compiled the modules and started their sandbox
    processes, as nodes that worked in the last half minute have."""
    mandel = (TASKS / "mandelbrot.wasm").read_bytes()
    for module, inputs in ((EMPTY, [b"warm %d" % i for i in range(400)]), (mandel, tiles(256, 64, 16))):
        job = await owner.submit(module, inputs, JobOptions(limits=LIMITS, replication=Replication(1, 1, 1)))
        await job.wait()


async def owner_and_worker_process(stack: AsyncExitStack, tmp: str) -> MeshNode:
    """A one-slot owner node in this process and a one-slot ``python -m meshnode`` bootstrapped to it, as on a
    LAN; both stop with ``stack``. The owner is returned at once: wait for the worker to be heard."""
    config = NodeConfig(data_dir=Path(tmp) / "owner", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, api=None, slots=1)
    owner = await stack.enter_async_context(open_node(config))
    worker = subprocess.Popen(
        [sys.executable, "-m", "meshnode", "--data-dir", str(Path(tmp) / "worker"), "--listen",
         "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--slots", "1", "--bootstrap", owner.dial_addrs[0]],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stack.callback(worker.wait)
    stack.callback(worker.terminate)
    return owner


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user and system) of this process (the owner) and of every process under it (the other
    node's, and the sandbox processes of both), by PID."""
    out = {}
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            sandbox = "process_main" in " ".join(p.cmdline())
            kind = "owner" if p.pid == os.getpid() else "sandboxes" if sandbox else "other node"
            t = p.cpu_times()
        except psutil.Error:
            continue  # it ended
        out[p.pid] = (kind, t.user + t.system)
    return out


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds between two readings of ``cpu_seconds`` by kind of process (a process started in between
    counts from zero)."""
    used = {"owner": 0.0, "other node": 0.0, "sandboxes": 0.0}
    for pid, (kind, t) in after.items():
        used[kind] += t - before.get(pid, (kind, 0.0))[1]
    return used


async def run_job(
    module: bytes, inputs: list[bytes], replication: Replication, processes: bool
) -> tuple[float, list[int], dict[str, float]]:
    """Wall time of one job on a fresh 2-node mesh (fresh result caches, warmed up), who ran how many replicas,
    and the CPU seconds each kind of process used during it (``cpu_used``)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            if processes:
                owner = await owner_and_worker_process(stack, tmp)
            else:
                config = NodeConfig(data_dir=Path(tmp) / "owner", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                                    api=None, slots=1)  # fmt: skip
                owner = await stack.enter_async_context(open_node(config))
                config = NodeConfig(data_dir=Path(tmp) / "worker", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                                    api=None, slots=1, bootstrap=tuple(owner.dial_addrs))  # fmt: skip
                await stack.enter_async_context(open_node(config))
            freeze_start_up()
            stack.callback(gc.unfreeze)  # this mesh's objects are collectable again once it has stopped
            while not owner.table.alive():
                await trio.sleep(0.05)
            await warm_up(owner)
            cpu_before = cpu_seconds()
            start = time.perf_counter()
            job = await owner.submit(module, inputs, JobOptions(limits=LIMITS, replication=replication))
            results = await job.wait()
            wall = time.perf_counter() - start
            cpu = cpu_used(cpu_before, cpu_seconds())
            ran = [sum(str(owner.peer_id) in r.executors for r in results), sum(len(r.executors) for r in results)]
            return wall, [ran[0], ran[1] - ran[0]], cpu


async def main(args: argparse.Namespace) -> None:
    mandel = (TASKS / "mandelbrot.wasm").read_bytes()
    work = tiles(args.size, args.tiles, args.max_iter)
    serial = single_thread_seconds(mandel, work)
    cores = len(os.sched_getaffinity(0))
    trivial = [str(i).encode() for i in range(args.trivial)]  # distinct: no result cache hits
    # the trivial job is short (about a second) and its time varies run to run: three fresh meshes
    t_jobs = sorted([await run_job(EMPTY, trivial, Replication(1, 1, 1), args.processes) for _ in range(3)],
                    key=lambda r: r[0])  # fmt: skip
    per = [t / args.trivial * 1e6 for t, _, _ in t_jobs]
    # so does a mandelbrot job's, on a shared machine: three fresh meshes, the median of them
    r1_runs = sorted([await run_job(mandel, work, Replication(1, 1, 1), args.processes) for _ in range(3)],
                     key=lambda r: r[0])  # fmt: skip
    w1, ran1, _ = r1_runs[1]
    # replicas 2 against replicas 1: medians both, as one job of either can be off by a tenth
    r2_runs = sorted([await run_job(mandel, work, Replication(2, 2, 2), args.processes) for _ in range(3)],
                     key=lambda r: r[0])  # fmt: skip
    w2, ran2, _ = r2_runs[1]
    where = "two processes" if args.processes else "one process"
    print(f"2-node mesh on loopback ({where}), 1 slot per node, {cores} cores; mandelbrot {args.size}x{args.size}, "
          f"{len(work)} tiles, max_iter {args.max_iter}\n")  # fmt: skip
    print("| figure | value |\n|---|---|")
    print(f"| overhead per trivial subtask, replicas 1 ({args.trivial} subtasks; median of 3, min-max) "
          f"| {per[1]:,.0f} µs ({per[0]:,.0f}-{per[2]:,.0f}) |")
    if args.processes:
        cpu = t_jobs[1][2]
        each = " / ".join(f"{cpu[k] / args.trivial * 1e6:,.0f} µs" for k in ("owner", "other node", "sandboxes"))
        print(f"| CPU per trivial subtask (the median job): owner / other node / sandbox processes | {each} |")
    print(f"| single-thread sum of tile times (sandbox) | {serial:.2f} s |")
    low, high = (serial / (r1_runs[i][0] * cores) for i in (2, 0))
    print(f"| wall, replicas 1 (median of 3, min-max) | {w1:.2f} s ({r1_runs[0][0]:.2f}-{r1_runs[2][0]:.2f}) |")
    print(f"| **parallel efficiency, replicas 1** (median of 3, min-max) | **{serial / (w1 * cores):.2f}** ({low:.2f}-{high:.2f}) |")
    print(f"| wall, replicas 2 (quorum 2; median of 3, min-max) | {w2:.2f} s ({r2_runs[0][0]:.2f}-{r2_runs[2][0]:.2f}; "
          f"**{w2 / w1:.2f}x** replicas 1) |")
    print(f"| replicas run by the owner and the other node: replicas 1 / replicas 2 | {ran1} / {ran2} |")


def workload_parser(description: str | None) -> argparse.ArgumentParser:
    """The flags of the two workloads, shared with benchmarks/peers.py."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--tiles", type=int, default=256)
    p.add_argument("--max-iter", type=int, default=256)
    p.add_argument("--trivial", type=int, default=2000)
    return p


if __name__ == "__main__":
    p = workload_parser(__doc__)
    p.add_argument("--processes", action="store_true", help="run the second node in a process of its own")
    trio.run(main, p.parse_args())
