"""Sandbox figures: wasm against native C, the fixed cost of a subtask, and 2 slots against 1.

    python benchmarks/sandbox.py            # needs gcc, and pip install -e '.[build]' for the build variants

Prints a Markdown report; docs/benchmarks.md holds the latest one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio
import wasmtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshnode.core.manifest import TaskLimits  # noqa: E402
from meshnode.sandbox.local_exec import run_locally  # noqa: E402
from meshnode.sandbox.runtime import ENGINE_ID, Sandbox  # noqa: E402

TASKS = ROOT / "tasks_wasm"
LIMITS = TaskLimits(fuel=2**62, memory=256 << 20, timeout_ms=600_000, max_output=256 << 20)
EMPTY_TASK = wasmtime.wat2wasm(
    """(module (memory (export "memory") 1)
         (func (export "alloc") (param i32) (result i32) (i32.const 1024))
         (func (export "run") (param i32 i32) (result i64) (i64.const 0x0000040000000000)))"""
)


def mandelbrot_input(size: int, max_iter: int, x0: int = 0, y0: int = 0, tile: int | None = None) -> bytes:
    t = tile or size
    return json.dumps(
        {"x0": x0, "y0": y0, "w": t, "h": t, "width": size, "height": size, "max_iter": max_iter},
        separators=(",", ":"),
    ).encode()


def best_of(n: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(n))


# --- wasm against native ---------------------------------------------------------------------


def build_native(tmp: Path) -> Path:
    exe = tmp / "mandelbrot_native"
    subprocess.run(
        ["gcc", "-O2", "-ffp-contract=off", f'-DTASK_SOURCE="{TASKS / "mandelbrot.c"}"', f"-I{TASKS / 'include'}",
         str(ROOT / "benchmarks" / "native_main.c"), "-o", str(exe)],
        check=True,
    )  # fmt: skip
    return exe


def build_wasm(tmp: Path, name: str, flags: list[str]) -> bytes:
    out = tmp / f"{name}.wasm"
    subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "--target=wasm32-freestanding", *flags, "-Wl,--no-entry", "-s",
         f"-I{TASKS / 'include'}", "-o", str(out), str(TASKS / "mandelbrot.c")],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def raw_engine_run(wasm: bytes, data: bytes, *, fuel: bool, epoch: bool, repeats: int) -> tuple[float, bytes]:
    """The task ABI on a bare wasmtime engine with the chosen meters, for comparison."""
    cfg = wasmtime.Config()
    cfg.consume_fuel = fuel
    cfg.epoch_interruption = epoch
    engine = wasmtime.Engine(cfg)
    module = wasmtime.Module(engine, wasm)
    best, out = 1e9, b""
    for _ in range(repeats):
        store = wasmtime.Store(engine)
        if fuel:
            store.set_fuel(2**62)
        if epoch:
            store.set_epoch_deadline(2**40)
        ex = wasmtime.Instance(store, module, []).exports(store)
        ptr = ex["alloc"](store, len(data))
        ex["memory"].write(store, data, ptr)
        t0 = time.perf_counter()
        packed = ex["run"](store, ptr, len(data)) & 0xFFFF_FFFF_FFFF_FFFF
        best = min(best, time.perf_counter() - t0)
        out = bytes(ex["memory"].read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFF_FFFF)))
    return best, out


def wasm_vs_native(tmp: Path, repeats: int) -> list[str]:
    data = mandelbrot_input(1024, 1000)
    exe = build_native(tmp)
    native_out = tmp / "native.out"
    native = float(subprocess.run([str(exe), data.decode(), str(repeats), str(native_out)],
                                  check=True, capture_output=True, text=True).stdout)  # fmt: skip
    expected = native_out.read_bytes()
    rows = [f"| native C, gcc -O2 | {native:.3f} | 1.00x | | yes |"]

    def sandbox_row(label: str, wasm: bytes, nan: bool = False) -> str:
        with Sandbox() as sb:
            module = sb.load(wasm, nan_canonical=nan)
            outcomes = [sb.run_sync(module, data, LIMITS) for _ in range(repeats)]
        t = min(o.seconds for o in outcomes)
        same = "yes" if outcomes[0].output == expected else "no"
        return f"| {label} | {t:.3f} | {t / native:.2f}x | {outcomes[0].fuel_used / 1e9:.2f} G | {same} |"

    shipped = (TASKS / "mandelbrot.wasm").read_bytes()
    rows.append(sandbox_row("**meshnode sandbox** (fuel + epoch), shipped build (zig -O2, 8 iterations per loop trip)", shipped))
    rows.append(sandbox_row("meshnode sandbox with NaN canonicalization", shipped, nan=True))
    for fuel, epoch in ((False, False), (False, True), (True, False)):
        t, out = raw_engine_run(shipped, data, fuel=fuel, epoch=epoch, repeats=repeats)
        label = f"bare wasmtime, fuel {'on' if fuel else 'off'}, epoch {'on' if epoch else 'off'}"
        rows.append(f"| {label} | {t:.3f} | {t / native:.2f}x | | {'yes' if out == expected else 'no'} |")
    for flags in (["-O2", "-DESCAPE_UNROLL=1"], ["-O3", "-DESCAPE_UNROLL=1"], ["-O3", "-funroll-loops", "-DESCAPE_UNROLL=1"], ["-O3"], ["-O2", "-msimd128"]):
        try:
            wasm = build_wasm(tmp, "variant", flags)
        except (subprocess.CalledProcessError, FileNotFoundError):
            rows.append(f"| sandbox, zig {' '.join(flags)} | (ziglang not installed) | | | |")
            continue
        rows.append(sandbox_row(f"meshnode sandbox, zig {' '.join(flags)}", wasm))
    head = [
        f"Mandelbrot, one 1024x1024 tile, max_iter 1000, best of {repeats}:",
        "",
        "| variant | seconds | vs native | fuel | same bytes as native |",
        "|---|---|---|---|---|",
    ]
    return head + rows


# --- fixed cost per subtask ------------------------------------------------------------------


def fixed_cost(n: int) -> list[str]:
    rows = ["| path | µs per subtask |", "|---|---|"]
    with Sandbox() as sb:
        module = sb.load(EMPTY_TASK)
        for _ in range(200):
            sb.run_sync(module, b"", LIMITS)

        def direct() -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                sb.run_sync(module, b"", LIMITS)
            return (time.perf_counter() - t0) / n

        rows.append(f"| `Sandbox.run_sync`, empty task, empty input | {best_of(3, direct) * 1e6:.0f} |")

        def with_input() -> float:
            data = b"x" * 1024
            t0 = time.perf_counter()
            for _ in range(n):
                sb.run_sync(module, data, LIMITS)
            return (time.perf_counter() - t0) / n

        rows.append(f"| `Sandbox.run_sync`, empty task, 1 KiB input | {best_of(3, with_input) * 1e6:.0f} |")

        async def one_thread_trip_each() -> float:
            t0 = time.perf_counter()
            for _ in range(n // 4):
                await sb.run(module, b"", LIMITS)
            return (time.perf_counter() - t0) / (n // 4)

        rows.append(f"| `await Sandbox.run` (one thread trip per subtask) | {trio.run(one_thread_trip_each) * 1e6:.0f} |")

        for slots in (1, 2):
            with Sandbox(slots=slots) as s2:
                m2 = s2.load(EMPTY_TASK)
                inputs = [b""] * n

                async def chunked() -> float:
                    t0 = time.perf_counter()
                    await run_locally(s2, m2, inputs, LIMITS, lambda i, o: None)
                    return (time.perf_counter() - t0) / n

                rows.append(f"| `run_locally` (adaptive chunks), {slots} slot{'s' * (slots > 1)} | {trio.run(chunked) * 1e6:.0f} |")
    return rows


# --- slots -----------------------------------------------------------------------------------


def slot_scaling(repeats: int) -> list[str]:
    size, tile = 2048, 256
    inputs = [mandelbrot_input(size, 500, x0, y0, tile) for y0 in range(0, size, tile) for x0 in range(0, size, tile)]
    wasm = (TASKS / "mandelbrot.wasm").read_bytes()
    times: dict[int, float] = {}
    for slots in (1, 2):
        with Sandbox(slots=slots) as sb:
            module = sb.load(wasm)

            async def job() -> float:
                t0 = time.perf_counter()
                await run_locally(sb, module, inputs, LIMITS, lambda i, o: None)
                return time.perf_counter() - t0

            times[slots] = best_of(repeats, lambda: trio.run(job))
    return [
        f"Mandelbrot {size}x{size}, max_iter 500, {len(inputs)} tiles of {tile}x{tile}, `run_locally`, best of {repeats}:",
        "",
        "| slots | wall seconds | tiles/s | speed-up |",
        "|---|---|---|---|",
        f"| 1 | {times[1]:.2f} | {len(inputs) / times[1]:.1f} | 1.00x |",
        f"| 2 | {times[2]:.2f} | {len(inputs) / times[2]:.1f} | **{times[1] / times[2]:.2f}x** |",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--subtasks", type=int, default=4000, help="subtasks for the fixed-cost figures")
    args = p.parse_args()
    print(f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{ENGINE_ID}, {len(__import__('os').sched_getaffinity(0))} cores\n")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for section in (wasm_vs_native(Path(tmp), args.repeats), fixed_cost(args.subtasks), slot_scaling(args.repeats)):
            print("\n".join(section), end="\n\n")


if __name__ == "__main__":
    main()
