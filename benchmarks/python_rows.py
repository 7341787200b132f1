"""Python tasks: rows/s of a trivial and of a numpy ``main(row)``, sandboxed, against a plain process pool.

    python benchmarks/python_rows.py [--trivial 20000] [--numpy 4000] [--compile]

Measured side by side in one run: the same script through ``exec`` (this machine's slots, the
owner's default grouping), through a 2-node loopback mesh (the second node a process of its own,
1 slot each; replicas 1, and 2 for the cost of verification), and in ``multiprocessing.Pool(2)``
(the unsandboxed, unverified alternative; the script imported once per worker). Also: the start-up
of one subtask, and with ``--compile`` the first use's compile time and peak memory in a fresh cache
(about a minute). Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jobs import owner_and_worker_process  # noqa: E402
from meshnode.config import DEFAULT_LIMITS  # noqa: E402
from meshnode.core.manifest import JobOptions, Replication  # noqa: E402
from meshnode.core.python_rows import batch_rows, default_rows_per_subtask, encode_row, encode_script  # noqa: E402
from meshnode.sandbox.local_exec import run_locally  # noqa: E402
from meshnode.sandbox.runtime import Sandbox  # noqa: E402

TRIVIAL = "def main(row):\n    return row * 2\n"
NUMPY = """
import numpy as np

def main(row):
    signal = np.sin(np.linspace(0, 40 * np.pi, 2048) * (1 + row % 7)) + np.cos(np.arange(2048) * 0.01 * row)
    spectrum = np.abs(np.fft.rfft(signal))
    return {"peak": int(np.argmax(spectrum)), "energy": round(float(np.sum(spectrum ** 2)), 3)}
"""
SCRIPTS = {"trivial": TRIVIAL, "numpy": NUMPY}


def _pool_main(source: str) -> Any:
    path = Path(tempfile.mkdtemp()) / "task.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("task", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


_main: Any = None


def _init(source: str) -> None:
    global _main
    _main = _pool_main(source)


def _call(row: int) -> Any:
    return _main(row)


def pool_seconds(source: str, n: int) -> float:
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2, initializer=_init, initargs=(source,)) as pool:
        pool.map(_call, range(n), chunksize=max(1, n // 64))
    return time.perf_counter() - start


def exec_seconds(source: str, n: int, slots: int) -> tuple[float, int]:
    """As ``meshnode exec``: the script checked and measured, its rows grouped by the owner's default."""
    rows = [encode_row(i) for i in range(n)]
    start = time.perf_counter()
    with Sandbox(slots=slots) as sandbox:
        sandbox.prepare_python()
        script = sandbox.load_python(encode_script("task.py", source))
        cost = sandbox.check_python(script, DEFAULT_LIMITS, rows[0])
        per = default_rows_per_subtask(n, cost.startup_fuel, cost.row_fuel)
        inputs = list(batch_rows(rows, per))
        failed: list[int] = []
        trio.run(run_locally, sandbox, script, inputs, DEFAULT_LIMITS, lambda i, o: failed.extend([i] * (not o.ok)))
    assert not failed
    return time.perf_counter() - start, per


def startup_ms(source: str) -> float:
    with Sandbox(slots=1) as sandbox:
        sandbox.prepare_python()
        script = sandbox.load_python(encode_script("task.py", source))
        one = next(batch_rows([encode_row(0)], 1))
        sandbox.run_sync(script, one, DEFAULT_LIMITS)
        times = sorted(sandbox.run_sync(script, one, DEFAULT_LIMITS).seconds for _ in range(7))
    return times[3] * 1000


async def mesh_seconds(source: str, n: int, replicas: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            owner = await owner_and_worker_process(stack, tmp)
            while not any(len(r.presence.runtimes) > 1 for r in owner.table.alive()):
                await trio.sleep(0.05)
            start = time.perf_counter()
            job = await owner.submit_python(source, list(range(n)), replicas=replicas, quorum=replicas,
                                            max_replicas=replicas)  # fmt: skip
            results = await job.wait()
            assert all(r.status == "ok" for r in results)
            return time.perf_counter() - start


def compile_figures() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "meshnode", "python-setup"], check=True, capture_output=True,
                       env={**os.environ, "MESHNODE_CACHE_DIR": cache})  # fmt: skip
        wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial", type=int, default=20_000)
    parser.add_argument("--numpy", type=int, default=4_000)
    parser.add_argument("--compile", action="store_true", help="also time the first use, in a fresh cache")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, load average before: {os.getloadavg()[0]:.2f}\n")
    if args.compile:
        wall, rss = compile_figures()
        print(f"first use (meshnode python-setup, fresh cache): {wall:.1f} s, peak RSS {rss:,.0f} MiB\n")
    print("| script | rows | rows/subtask | start-up per subtask | exec | mesh, replicas 1 | mesh, replicas 2 "
          "| Pool(2) | exec / Pool per row |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n in (("trivial", args.trivial), ("numpy", args.numpy)):
        source = SCRIPTS[name]
        pool = pool_seconds(source, n)
        local, per = exec_seconds(source, n, cores)
        mesh1 = trio.run(mesh_seconds, source, n, 1)
        mesh2 = trio.run(mesh_seconds, source, n, 2)
        print(f"| {name} | {n:,} | {per:,} | {startup_ms(source):.0f} ms | {n / local:,.0f}/s "
              f"| {n / mesh1:,.0f}/s | {n / mesh2:,.0f}/s | {n / pool:,.0f}/s | {local / pool:.1f}x |")  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
