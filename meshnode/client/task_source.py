"""What ``Client.submit`` accepts as a task and as inputs, turned into a job body's module and frames."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..core.python_rows import encode_row, encode_script
from ..errors import InputError

__all__ = ["Task", "encode_inputs", "load_task"]

WASM_MAGIC: Final = b"\0asm"


@dataclass(frozen=True, slots=True)
class Task:
    """A job's module (a WebAssembly module, or a Python script as ``encode_script`` makes it)."""

    module: bytes
    python: bool
    name: str  # the job's default label


def load_task(task: str | os.PathLike[str] | bytes) -> Task:
    """The module of ``task``: a path to a ``.wasm`` module or a ``.py`` script defining ``main(row)``,
    or a WebAssembly module's bytes.

    Raises:
        InputError: the file cannot be read, or is neither a WebAssembly module nor UTF-8 Python.
    """
    if isinstance(task, bytes | bytearray | memoryview):
        module = bytes(task)
        if not module.startswith(WASM_MAGIC):
            raise InputError("the task's bytes are not a WebAssembly module; pass a script's path for a Python task")
        return Task(module, False, "module.wasm")
    path = Path(task)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the task {path}: {exc.strerror or exc}") from None
    if path.suffix == ".py":
        try:
            source = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        return Task(encode_script(path.name, source), True, path.name)
    if not data.startswith(WASM_MAGIC):
        raise InputError(f"{path} is not a WebAssembly module (nor a .py script)")
    return Task(data, False, path.name)


def encode_inputs(inputs: Iterable[Any], python: bool) -> Iterator[bytes]:
    """Each input as the bytes a subtask receives.

    For a module: bytes as they are, text as UTF-8, anything else as compact JSON (so
    ``{"seed": 1}`` reaches the task as ``{"seed":1}``). For a script: each input is one
    row, the value ``main(row)`` receives (JSON-like values, or bytes).

    Raises:
        InputError: an input JSON cannot hold (naming its position).
    """
    for number, value in enumerate(inputs):
        try:
            if python:
                yield encode_row(value)
            elif isinstance(value, bytes | bytearray | memoryview):
                yield bytes(value)
            elif isinstance(value, str):
                yield value.encode("utf-8")
            else:
                yield json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {number} cannot be sent: {exc}") from None
