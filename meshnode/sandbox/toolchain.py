"""Compile a task's C source to a WebAssembly module that follows the task ABI.

This is the one place that knows the compiler command. ``python -m meshnode build`` and
``tasks_wasm/build.py`` both go through :func:`compile_task`.

The compiler is clang as shipped by the ``ziglang`` wheel (``pip install 'meshnode[build]'``),
run as ``python -m ziglang cc`` so that it is the copy installed next to this interpreter.
The flags are chosen for reproducibility: with ``-s`` no debug info or name section is
written, so the same source gives the same bytes whatever the directory, the output file
name or the machine. That matters because a module is identified by its hash.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import wasmtime

from ..errors import BuildError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["compile_task", "task_include_dir"]

_HEADER = "meshnode_task.h"

_COMPILER_FLAGS = (
    "--target=wasm32-freestanding",
    "-O2",
    "-Wl,--no-entry",  # a library of exports, not a program with _start
    "-s",  # no debug info and no name section: byte-identical builds
)

# Export name -> (params, results) as wasmtime prints the value types; None for the memory.
_REQUIRED_EXPORTS: dict[str, tuple[list[str], list[str]] | None] = {
    "memory": None,
    "alloc": (["i32"], ["i32"]),
    "run": (["i32", "i32"], ["i64"]),
}

_COMPILE_TIMEOUT_S = 300


def task_include_dir() -> Path:
    """Return the directory that holds ``meshnode_task.h``.

    In a source checkout that is ``<repo>/tasks_wasm/include``; an installed wheel carries
    the same files as ``meshnode/task_include``.
    """
    package_dir = Path(__file__).resolve().parents[1]  # meshnode/
    checkout = package_dir.parent / "tasks_wasm" / "include"
    if (checkout / _HEADER).is_file():
        return checkout
    return package_dir / "task_include"


def compile_task(source: Path, output: Path, *, include_dirs: Sequence[Path] = ()) -> None:
    """Compile a C task to WebAssembly and check that it follows the task ABI.

    The module is built into a temporary file beside ``output`` and renamed into place only
    once it has passed the checks, so a failed build never leaves a partial ``output`` (and
    never clobbers a good one).

    Args:
        source: The task's C source file.
        output: Where to write the ``.wasm`` module. Its directory is created if needed.
        include_dirs: Extra directories for ``#include``; the directory holding
            ``meshnode_task.h`` is always searched.

    Raises:
        BuildError: ``source`` does not exist, ziglang is not installed, the compiler
            reported errors (its diagnostics are in the message), or the module imports
            anything or lacks one of the exports ``memory``, ``alloc`` and ``run``.
    """
    source = Path(source)
    output = Path(output)
    if not source.is_file():
        raise BuildError(f"task source not found: {source}")
    if importlib.util.find_spec("ziglang") is None:
        raise BuildError("ziglang is not installed: pip install 'meshnode[build]'")

    output.parent.mkdir(parents=True, exist_ok=True)
    # A hidden name in the same directory, so the final os.replace is atomic.
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex}.tmp")
    includes = [task_include_dir(), *map(Path, include_dirs)]
    cmd = [
        sys.executable, "-m", "ziglang", "cc", *_COMPILER_FLAGS,
        *(f"-I{d}" for d in includes),
        "-o", str(tmp), str(source),
    ]  # fmt: skip
    try:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_COMPILE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"compiling {source} took longer than {_COMPILE_TIMEOUT_S} s") from exc
        if proc.returncode != 0 or not tmp.is_file():
            diagnostics = (proc.stderr.strip() or proc.stdout.strip()) or f"exit status {proc.returncode}"
            raise BuildError(f"compiling {source} failed:\n{diagnostics}")
        _check_abi(tmp.read_bytes(), source)
        tmp.chmod(tmp.stat().st_mode & ~0o111)  # the linker marks it executable; it is data
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _check_abi(wasm: bytes, source: Path) -> None:
    """Raise BuildError unless the module has no imports and the ABI's exports."""
    config = wasmtime.Config()
    # Validate with the features the sandbox refuses turned off, so that a module it would
    # reject fails here, at build time.
    config.wasm_threads = False
    config.wasm_relaxed_simd = False
    try:
        module = wasmtime.Module(wasmtime.Engine(config), wasm)
    except wasmtime.WasmtimeError as exc:
        raise BuildError(f"{source} compiled to a module the sandbox rejects: {exc}") from exc

    if module.imports:
        names = ", ".join(f"{imp.module}.{imp.name}" for imp in module.imports)
        raise BuildError(
            f"{source}: a task must not import anything, but the module imports {names}; "
            "tasks have no host functions, so define everything the task calls"
        )

    exports = {exp.name: exp.type for exp in module.exports}
    for name, signature in _REQUIRED_EXPORTS.items():
        found = exports.get(name)
        if found is None:
            raise BuildError(f"{source}: the module does not export {name!r} (include {_HEADER} and define run)")
        if signature is None:
            if not isinstance(found, wasmtime.MemoryType):
                raise BuildError(f"{source}: export 'memory' is not a memory")
            continue
        params, results = signature
        if not isinstance(found, wasmtime.FuncType) or (
            [str(t) for t in found.params] != params or [str(t) for t in found.results] != results
        ):
            want = f"({', '.join(params)}) -> {', '.join(results)}"
            raise BuildError(f"{source}: export {name!r} must be a function {want}, found {_describe(found)}")


def _describe(extern_type: object) -> str:
    if isinstance(extern_type, wasmtime.FuncType):
        params = ", ".join(str(t) for t in extern_type.params)
        results = ", ".join(str(t) for t in extern_type.results) or "()"
        return f"a function ({params}) -> {results}"
    return type(extern_type).__name__
