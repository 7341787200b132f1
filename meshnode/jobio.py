"""A job's inputs and outputs as files: the forms ``exec`` and ``submit`` share.

Inputs (one subtask each):

* ``--input-jsonl FILE``: every non-blank line; the input is the line's bytes
  without its line ending.
* ``--input-csv FILE``: every data row under a header row; the input is the
  compact JSON object header -> value, in header order (values stay text).
* ``--input-dir DIR``: every regular file, sorted by name; the input is its bytes.
* ``--range N``: N subtasks; the input is the decimal index (``b"17"``).

Output: JSON Lines, one line per subtask in input order::

    {"index": 0, "status": "ok", "output": ..., "sha256": "...", "executors": ["12D3KooW..."]}

``output`` is the output parsed as JSON when it is UTF-8 JSON, else
``{"base64": "..."}``; an ``error`` object (code, message) is added on failure.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .core.outcome import TaskOutcome
from .errors import InputError

__all__ = ["InputSpec", "output_value", "read_inputs", "result_record"]

InputKind = Literal["jsonl", "csv", "dir", "range"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Which of the four input forms, and its file, directory or count."""

    kind: InputKind
    source: str

    def describe(self) -> str:
        return f"--range {self.source}" if self.kind == "range" else f"--input-{self.kind} {self.source}"


def read_inputs(spec: InputSpec) -> Iterator[bytes]:
    """Yield the inputs of ``spec`` in order.

    Raises:
        InputError: the file or directory cannot be read or is malformed (the
            message names it, with the line or row).
    """
    readers = {"jsonl": _jsonl, "csv": _csv, "dir": _directory, "range": _range}
    try:
        yield from readers[spec.kind](spec.source)
    except OSError as exc:
        raise InputError(f"cannot read {spec.describe()}: {exc.strerror or exc}") from exc


def _jsonl(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n").removesuffix(b"\r")
            if line.strip():
                yield line


def _csv(path: str) -> Iterator[bytes]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            rows = csv.reader(f, strict=True)
            header = next(rows, None)
            if header is None:
                raise InputError(f"{path}: the CSV file is empty (it needs a header row)")
            if len(set(header)) != len(header):
                raise InputError(f"{path}: the CSV header repeats a column name")
            for row in rows:
                if not row:
                    continue
                if len(row) != len(header):
                    raise InputError(
                        f"{path}, line {rows.line_num}: {len(row)} fields where the header has {len(header)}"
                    )
                obj = dict(zip(header, row, strict=True))
                yield json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        except csv.Error as exc:
            raise InputError(f"{path}, line {rows.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _directory(path: str) -> Iterator[bytes]:
    with os.scandir(path) as it:
        names = sorted(entry.name for entry in it if entry.is_file())
    for name in names:
        yield Path(path, name).read_bytes()


def _range(count: str) -> Iterator[bytes]:
    try:
        n = int(count)
    except ValueError:
        n = -1
    if n < 0:
        raise InputError(f"--range takes a count of subtasks, not {count!r}")
    for i in range(n):
        yield str(i).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def output_value(output: bytes) -> Any:
    """The output as JSON when it is UTF-8 JSON text, else ``{"base64": ...}``."""
    try:
        return json.loads(output.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {"base64": base64.b64encode(output).decode("ascii")}


def result_record(index: int, outcome: TaskOutcome, executors: Sequence[str]) -> dict[str, Any]:
    """One output line, as a dict in the documented key order."""
    if outcome.output is not None:
        return {
            "index": index,
            "status": "ok",
            "output": output_value(outcome.output),
            "sha256": hashlib.sha256(outcome.output).hexdigest(),
            "executors": list(executors),
        }
    assert outcome.error is not None
    return {
        "index": index,
        "status": "error",
        "output": None,
        "sha256": None,
        "error": {"code": outcome.error.code, "message": outcome.error.message},
        "executors": list(executors),
    }
