"""Rebuild the bundled tasks: every tasks_wasm/*.c into a .wasm of the same name.

Usage:
    python tasks_wasm/build.py                 # rebuild beside the sources
    python tasks_wasm/build.py --out-dir DIR   # write the modules to DIR instead
    python tasks_wasm/build.py --check         # exit 1 if a fresh build differs from the committed .wasm

Builds are byte-for-byte reproducible (see meshnode.sandbox.toolchain), which is what makes --check
meaningful: the committed modules are exactly what their sources compile to.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":  # run from a checkout without installing meshnode
    sys.path.insert(0, str(HERE.parent))

from meshnode.errors import BuildError  # noqa: E402
from meshnode.sandbox.toolchain import compile_task  # noqa: E402


def task_sources() -> list[Path]:
    """Return the task sources, sorted by name."""
    return sorted(HERE.glob("*.c"))


def build_all(out_dir: Path) -> list[Path]:
    """Compile every task into ``out_dir`` and return the module paths, in source order.

    Raises:
        BuildError: a task failed to build; the message names it and carries the diagnostics.
    """
    sources = task_sources()
    outputs = [out_dir / f"{src.stem}.wasm" for src in sources]
    # The compiler runs as a subprocess, so threads are enough to use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for future in [pool.submit(compile_task, src, out) for src, out in zip(sources, outputs)]:
            future.result()
    return outputs


def check() -> list[str]:
    """Build into a temporary directory; return the names of tasks whose bytes differ from the committed .wasm."""
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for built in build_all(Path(tmp)):
            committed = HERE / built.name
            if not committed.is_file() or committed.read_bytes() != built.read_bytes():
                stale.append(built.name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write the modules (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="verify that the committed modules are up to date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = check()
            if stale:
                print("out of date (rebuild with python tasks_wasm/build.py):", *stale, sep="\n  ", file=sys.stderr)
                return 1
            print(f"all {len(task_sources())} task modules are up to date")
            return 0
        for path in build_all(args.out_dir):
            print(f"{path}  {path.stat().st_size} bytes")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
