"""Adaptive replication on a real 2-node mesh: runs per subtask and wall time against replicas 1 and 2, in one run.

    python benchmarks/adaptive.py [--size 4096] [--tiles 256] [--max-iter 256]

One mesh (this process owns the jobs; the other node is a ``python -m meshnode`` process, as on a LAN), one slot
per node. First a cold adaptive job (nobody trusted: the warm-up is in its figures), then, with the trust it
earned, the same job with replicas 1, replicas 2 and adaptive replication. Each job has its own ``max_iter``
(so no result is served from a cache); the single-thread sum of each job's tile times is measured to compare
them fairly. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jobs import LIMITS, TASKS, owner_and_worker_process, single_thread_seconds, tiles, warm_up  # noqa: E402
from meshnode.core.manifest import JobOptions, Replication  # noqa: E402
from meshnode.node.mesh_node import MeshNode  # noqa: E402

ADAPTIVE = JobOptions(limits=LIMITS, replication=Replication(1, 2, 3), verify="adaptive")


async def measure(owner: MeshNode, module: bytes, inputs: list[bytes], options: JobOptions) -> tuple[float, float, Counter[str]]:
    """Wall time, runs per subtask, and how the subtasks were verified."""
    start = time.perf_counter()
    job = await owner.submit(module, inputs, options)
    results = await job.wait()
    wall = time.perf_counter() - start
    runs = sum(job.stats.summary()["runs_per_peer"].values()) / len(results)
    return wall, runs, Counter(r.verified_by for r in results)


async def main(args: argparse.Namespace) -> None:
    mandel = (TASKS / "mandelbrot.wasm").read_bytes()
    cores = len(os.sched_getaffinity(0))
    plan = [("adaptive, cold (nobody trusted yet)", ADAPTIVE), ("replicas 1", JobOptions(LIMITS, Replication(1, 1, 1))),
            ("replicas 2", JobOptions(LIMITS, Replication(2, 2, 2))), ("adaptive, warm", ADAPTIVE)]  # fmt: skip
    jobs = [tiles(args.size, args.tiles, args.max_iter + i) for i in range(len(plan))]
    serial = [single_thread_seconds(mandel, work) for work in jobs]
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            owner = await owner_and_worker_process(stack, tmp)
            while not owner.table.alive():
                await trio.sleep(0.05)
            await warm_up(owner)
            for (name, options), work, single in zip(plan, jobs, serial, strict=True):
                wall, runs, ways = await measure(owner, mandel, work, options)
                rows.append((name, wall, runs, single / (wall * cores), ways))
    print(f"2-node mesh on loopback (two processes), 1 slot per node, {cores} cores, load {load:.2f} at the start; "
          f"mandelbrot {args.size}x{args.size}, {args.tiles} tiles\n")  # fmt: skip
    print("| job | wall | runs per subtask | efficiency (single-thread work / wall x cores) | verified by |")
    print("|---|---|---|---|---|")
    for name, wall, runs, efficiency, ways in rows:
        shown = ", ".join(f"{k} {v}" for k, v in ways.most_common())
        print(f"| {name} | {wall:.2f} s | {runs:.2f} | {efficiency:.2f} | {shown} |")
    r1, r2, warm = rows[1][1], rows[2][1], rows[3][1]
    print(f"\nadaptive (warm) / replicas 1: {warm / r1:.2f}x; replicas 2 / replicas 1: {r2 / r1:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--max-iter", type=int, default=256)
    trio.run(main, parser.parse_args())
