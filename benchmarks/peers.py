"""The reference systems on meshnode's two jobs: Ray, Dask and multiprocessing on this machine.

    pip install -e '.[bench]'
    python benchmarks/peers.py [--tiles 256] [--size 4096] [--max-iter 256] [--trivial 2000]

Same workloads as benchmarks/jobs.py: the overhead per trivial task (a Python function that returns
at once, and the empty wasm task run in meshnode's Sandbox), and the parallel efficiency on the
mandelbrot tiles run in meshnode's Sandbox in the workers. Efficiency = (sum of single-thread tile
times in the same sandbox, main process) / (wall time x cores), with every tile's output (256 KiB at
the defaults) sent back to the caller (the median of three runs), and again with only its size sent
back. Every system is started and warmed up before the clock starts, so its start-up is not in the
figures. A system that cannot be imported is skipped. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from jobs import EMPTY, LIMITS, TASKS, single_thread_seconds, tiles, workload_parser  # noqa: E402

from meshnode.sandbox.runtime import Sandbox, TaskModule  # noqa: E402

# --- what runs in the workers -----------------------------------------------------------------
# The script runs as the module "peers" (see the end of the file) with benchmarks/ on PYTHONPATH, so
# tasks are sent to the workers by name and each worker process keeps one open sandbox, with both
# modules loaded, for all of its tasks, as a meshnode slot does.

_sandbox: Sandbox | None = None
_modules: dict[str, TaskModule] = {}


def _run(module: str, data: bytes) -> bytes:
    global _sandbox
    if _sandbox is None:
        _sandbox = Sandbox().__enter__()  # open for the life of the worker process
        _modules["empty"] = _sandbox.load(EMPTY)
        _modules["mandelbrot"] = _sandbox.load((TASKS / "mandelbrot.wasm").read_bytes())
    outcome = _sandbox.run_sync(_modules[module], data, LIMITS)
    if outcome.output is None:
        raise RuntimeError(f"{module} task failed: {outcome.error}")
    return outcome.output


def warm_up(_: int) -> int:
    """Load the sandbox and both modules; the short sleep spreads a batch over every worker."""
    _run("empty", b"")
    time.sleep(0.05)
    return os.getpid()


def trivial_python(_: int) -> int:
    return os.getpid()


def trivial_wasm(_: int) -> int:
    _run("empty", b"")
    return os.getpid()


def mandelbrot_tile(data: bytes) -> tuple[int, bytes]:
    return os.getpid(), _run("mandelbrot", data)


def mandelbrot_tile_size(data: bytes) -> tuple[int, int]:
    """The same run, sending back only the output's size: what the result transfer costs."""
    return os.getpid(), len(_run("mandelbrot", data))


# --- the systems ------------------------------------------------------------------------------
# Each takes a worker function and its inputs and returns the results in input order; the
# measured map is the system's ordinary way to run many independent tasks and collect them all.

Mapper = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


@dataclass
class Row:
    system: str
    python_us: float | None = None
    wasm_us: float | None = None
    mandel_wall: float | None = None
    efficiency: float | None = None
    efficiency_sizes_only: float | None = None
    note: str = ""


def timed(map_fn: Mapper, fn: Callable[[Any], Any], inputs: list[Any]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    results = map_fn(fn, inputs)
    return time.perf_counter() - start, results


def warm(map_fn: Mapper, cores: int, mandel_inputs: list[bytes]) -> set[int]:
    """Run batches until every worker process has answered, then a small batch of each task."""
    pids: set[int] = set()
    for _ in range(40):
        pids.update(map_fn(warm_up, list(range(4 * cores))))
        if len(pids) >= cores:
            break
    map_fn(trivial_python, list(range(100)))
    map_fn(trivial_wasm, list(range(100)))
    map_fn(mandelbrot_tile, mandel_inputs[: 2 * cores])
    map_fn(mandelbrot_tile_size, mandel_inputs[: 2 * cores])
    return pids


def measure(name: str, map_fn: Mapper, args: argparse.Namespace, work: list[bytes], serial: float,
            cores: int, digests: dict[str, str]) -> Row:  # fmt: skip
    warmed = warm(map_fn, cores, work)
    n = args.trivial
    python_wall, pids_python = timed(map_fn, trivial_python, list(range(n)))
    wasm_wall, pids_wasm = timed(map_fn, trivial_wasm, list(range(n)))
    # the median of three, as benchmarks/jobs.py times meshnode: one run on a shared machine varies
    mandel_wall, tiles_out = sorted((timed(map_fn, mandelbrot_tile, work) for _ in range(3)), key=lambda r: r[0])[1]
    sizes_wall, sizes_out = timed(map_fn, mandelbrot_tile_size, work)
    pids = set(pids_python) | set(pids_wasm) | {pid for pid, _ in tiles_out + sizes_out}
    digests[name] = hashlib.sha256(b"".join(out for _, out in tiles_out)).hexdigest()
    note = f"{len(pids)} worker processes"
    if not pids <= warmed:
        note += f", {len(pids - warmed)} started during the measured runs"
    return Row(name, python_wall / n * 1e6, wasm_wall / n * 1e6, mandel_wall, serial / (mandel_wall * cores),
               serial / (sizes_wall * cores), note)  # fmt: skip


def run_multiprocessing(args: argparse.Namespace, work: list[bytes], serial: float, cores: int,
                        digests: dict[str, str]) -> list[Row]:  # fmt: skip
    # Spawned, not forked: a wasmtime engine created in a child forked from a process that has used
    # wasmtime (the single-thread run) can hang.
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        row = measure(f"multiprocessing.Pool({cores}), chunksize 1", lambda fn, xs: pool.map(fn, xs, chunksize=1),
                      args, work, serial, cores, digests)  # fmt: skip
        # Pool.map's default chunksize sends about len/(4 x workers) tasks per message: the
        # batching that the other systems (and meshnode) do not do for independent tasks.
        n = args.trivial
        batched = Row(f"multiprocessing.Pool({cores}), default chunksize (trivial only)")
        batched.python_us = timed(pool.map, trivial_python, list(range(n)))[0] / n * 1e6
        batched.wasm_us = timed(pool.map, trivial_wasm, list(range(n)))[0] / n * 1e6
        batched.note = f"chunksize {-(-n // (4 * cores))}"
    return [row, batched]


def run_dask(args: argparse.Namespace, work: list[bytes], serial: float, cores: int,
             digests: dict[str, str]) -> list[Row]:  # fmt: skip
    import dask
    import distributed

    # No dashboard: it needs bokeh, which dask[distributed] does not install (Ray's runs as it ships).
    with (
        distributed.LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):

        def dask_map(fn: Callable[[Any], Any], inputs: list[Any]) -> list[Any]:
            return client.gather(client.map(fn, inputs, pure=False))

        row = measure(f"Dask {dask.__version__}, LocalCluster({cores} processes x 1 thread)", dask_map, args, work,
                      serial, cores, digests)  # fmt: skip
    return [row]


def run_ray(args: argparse.Namespace, work: list[bytes], serial: float, cores: int,
            digests: dict[str, str]) -> list[Row]:  # fmt: skip
    import ray

    ray.init(num_cpus=cores, logging_level="WARNING")
    try:
        remote: dict[Callable[[Any], Any], Any] = {}

        def ray_map(fn: Callable[[Any], Any], inputs: list[Any]) -> list[Any]:
            if fn not in remote:
                remote[fn] = ray.remote(fn)
            return ray.get([remote[fn].remote(x) for x in inputs])

        row = measure(f"Ray {ray.__version__}, local, num_cpus={cores}", ray_map, args, work, serial, cores, digests)
    finally:
        ray.shutdown()
    return [row]


SYSTEMS: list[tuple[str, str, Callable[..., list[Row]]]] = [
    ("multiprocessing", "multiprocessing", run_multiprocessing),
    ("Dask", "distributed", run_dask),
    ("Ray", "ray", run_ray),
]


def cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def report(rows: Iterable[Row]) -> None:
    print("| system | µs per trivial task (Python) | tasks/s | µs per trivial task (empty wasm in Sandbox) "
          "| tasks/s | mandelbrot wall | **efficiency** | efficiency, only sizes sent back | |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_s = [None if us is None else 1e6 / us for us in (r.python_us, r.wasm_us)]
        wall = "" if r.mandel_wall is None else f"{r.mandel_wall:.2f} s"
        eff = "" if r.efficiency is None else f"**{r.efficiency:.2f}**"
        print(f"| {r.system} | {cell(r.python_us, ',.0f')} | {cell(per_s[0], ',.0f')} | {cell(r.wasm_us, ',.0f')} "
              f"| {cell(per_s[1], ',.0f')} | {wall} | {eff} | {cell(r.efficiency_sizes_only, '.2f')} | {r.note} |")  # fmt: skip


def main(args: argparse.Namespace) -> None:
    load_at_start = os.getloadavg()
    mandel = (TASKS / "mandelbrot.wasm").read_bytes()
    work = tiles(args.size, args.tiles, args.max_iter)
    serial = single_thread_seconds(mandel, work)
    cores = len(os.sched_getaffinity(0))
    rows: list[Row] = []
    skipped: list[str] = []
    digests: dict[str, str] = {}
    for label, module, run in SYSTEMS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            skipped.append(f"{label} ({exc})")
            continue
        rows += run(args, work, serial, cores, digests)

    # The machine may be shared: the 1-minute load average says whether the figures can be trusted.
    print(f"{cores} cores, 1-minute load average {load_at_start[0]:.2f} at the start and {os.getloadavg()[0]:.2f} "
          f"at the end; {args.trivial} trivial tasks; mandelbrot {args.size}x{args.size}, {len(work)} tiles, "
          f"max_iter {args.max_iter}; each system started and warmed up before timing (start-up excluded)\n")  # fmt: skip
    print(f"single-thread sum of tile times (sandbox, main process): {serial:.2f} s\n")
    report(rows)
    if skipped:
        print("\nskipped, cannot be imported: " + "; ".join(skipped))
    if len(set(digests.values())) > 1:
        print(f"\n**the systems returned different mandelbrot tiles**: {digests}")
    elif len(digests) > 1:
        print(f"\nall {len(digests)} systems returned the same {len(work)} mandelbrot tiles")


if __name__ == "__main__":
    p = workload_parser(__doc__)
    # Every worker process (spawned by multiprocessing or Dask, or started by Ray) imports this file as "peers";
    # running it under that name here too makes the task functions picklable by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")]))
    import peers

    peers.main(p.parse_args())
