"""A job's inputs and outputs as files: the forms ``exec`` and ``submit`` share.

Inputs (one subtask each):

* ``--input-jsonl FILE``: every non-blank line; the input is the line's bytes
  without its line ending.
* ``--input-csv FILE``: every data row under a header row; the input is the
  compact JSON object header -> value, in header order, with values typed per
  column as for a script's rows (``read_rows``): numbers where the whole column
  parses, an empty field null there; ``csv_strings`` keeps every value text. A
  field may be as large as an input can be (``CSV_FIELD_MAX`` characters).
* ``--input-dir DIR``: every regular file, sorted by name; the input is its bytes.
  A symlink is followed when it leads to a regular file inside the directory;
  subdirectories are skipped; anything else (a symlink leading out of the
  directory or nowhere, a FIFO, socket or device) is refused with an error
  naming it, before any input is read.
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
import math
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ..core.outcome import TaskOutcome
from ..core.python_rows import encode_row
from ..errors import InputError
from ..storage.blobs import DEFAULT_MAX_BLOB_SIZE
from ..units import format_size

__all__ = ["CSV_FIELD_MAX", "InputSpec", "output_value", "read_inputs", "read_rows", "result_record"]

InputKind = Literal["jsonl", "csv", "dir", "range"]

# The largest input a subtask can carry is one blob; a CSV field cannot make a larger one.
CSV_FIELD_MAX: Final = DEFAULT_MAX_BLOB_SIZE
# csv.field_size_limit is one setting for the whole process: readers here raise it only
# while they parse a row, one at a time, so two readers never restore each other's value.
_CSV_LIMIT_LOCK: Final = threading.Lock()


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Which of the four input forms, and its file, directory or count."""

    kind: InputKind
    source: str

    def describe(self) -> str:
        return f"--range {self.source}" if self.kind == "range" else f"--input-{self.kind} {self.source}"


def read_inputs(spec: InputSpec, *, csv_strings: bool = False) -> Iterator[bytes]:
    """Yield the inputs of ``spec`` in order, as a module's subtasks take them (see the module docstring).

    A CSV row's values are typed as ``read_rows`` types them unless ``csv_strings``.

    Raises:
        InputError: the file or directory cannot be read or is malformed (the
            message names it, with the line or row).
    """
    if spec.kind == "csv":
        for row in _csv_rows(spec, csv_strings):
            yield json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        return
    readers = {"jsonl": _jsonl, "dir": _directory, "range": _range}
    try:
        yield from readers[spec.kind](spec.source)
    except OSError as exc:
        raise InputError(f"cannot read {spec.describe()}: {exc.strerror or exc}") from exc


def read_rows(spec: InputSpec, *, csv_strings: bool = False) -> Iterator[bytes]:
    """Yield the rows of ``spec`` for a Python task's ``main(row)``, each encoded by ``encode_row``.

    A JSON line is its parsed value, a file its bytes, a ``--range`` index an int, and a CSV
    row a dict whose values are typed per column, as pandas types them: a column whose
    every non-empty field is an integer holds ints, else one whose every non-empty field is
    a number holds floats, else text; an empty field is None in a typed column. With
    ``csv_strings`` every value stays text.

    Raises:
        InputError: as ``read_inputs``, and for a JSON line that is not JSON (naming its line).
    """
    if spec.kind == "range":
        for data in read_inputs(spec):
            yield encode_row(int(data))
    elif spec.kind == "dir":
        for data in read_inputs(spec):
            yield encode_row(data)
    elif spec.kind == "jsonl":
        yield from _json_rows(spec.source)
    else:
        for row in _csv_rows(spec, csv_strings):
            yield encode_row(row)


def _json_rows(path: str) -> Iterator[bytes]:
    line_number = 0
    try:
        with open(path, "rb") as f:
            for line_number, line in enumerate(f, 1):
                if line.strip():
                    yield encode_row(json.loads(line, parse_constant=_reject_constant))
    except OSError as exc:
        raise InputError(f"cannot read --input-jsonl {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}, line {line_number}: not JSON ({exc})") from None


def _csv_rows(spec: InputSpec, csv_strings: bool) -> Iterator[dict[str, Any]]:
    """The CSV rows of ``spec``, each a dict in header order, typed per column unless ``csv_strings``.

    Raises:
        InputError: as ``read_inputs``.
    """
    try:
        if csv_strings:
            yield from _csv(spec.source)
            return
        types: dict[str, type] = {}
        for row in _csv(spec.source):  # a first pass decides each column's type from all of its fields
            for column, text in row.items():
                if text != "":
                    types[column] = _widest(types.get(column, int), text)
        for row in _csv(spec.source):
            yield {column: _typed(types.get(column, str), text) for column, text in row.items()}
    except OSError as exc:
        raise InputError(f"cannot read {spec.describe()}: {exc.strerror or exc}") from exc


def _typed(kind: type, text: str) -> Any:
    """A field of a column of type ``kind``: text stays text in a text column; elsewhere empty is None."""
    if kind is str:
        return text
    return None if text == "" else kind(text)


def _widest(current: type, text: str) -> type:
    """The narrowest of int, float, str that holds both the column so far and ``text``."""
    for kind in (int, float)[(int, float, str).index(current) :]:
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            continue  # "nan" and "inf" are text here: JSON cannot carry them
        return kind
    return str


def _jsonl(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n").removesuffix(b"\r")
            if line.strip():
                yield line


def _csv(path: str) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, strict=True)
        try:
            header = _next_row(rows)
            if header is None:
                raise InputError(f"{path}: the CSV file is empty (it needs a header row)")
            if len(set(header)) != len(header):
                raise InputError(f"{path}: the CSV header repeats a column name")
            while (row := _next_row(rows)) is not None:
                if not row:
                    continue
                if len(row) != len(header):
                    raise InputError(
                        f"{path}, line {rows.line_num}: {len(row)} fields where the header has {len(header)}"
                    )
                yield dict(zip(header, row, strict=True))
        except csv.Error as exc:
            raise InputError(f"{path}, line {rows.line_num}: {_csv_problem(exc)}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _next_row(rows: Iterator[list[str]]) -> list[str] | None:
    """The next row parsed with fields up to ``CSV_FIELD_MAX``; None at the end.

    The csv module reads its field limit while it parses, so the limit is raised
    for exactly this call and restored before control returns to the caller:
    code elsewhere in the process never sees it changed between rows.
    """
    with _CSV_LIMIT_LOCK:
        previous = csv.field_size_limit(CSV_FIELD_MAX)
        try:
            return next(rows, None)
        finally:
            csv.field_size_limit(previous)


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):  # the csv module's wording, stated in our units
        return f"a field is over the {format_size(CSV_FIELD_MAX)} limit (counted in characters)"
    return str(exc)


def _directory(path: str) -> Iterator[bytes]:
    root = Path(path).resolve(strict=True)
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda entry: entry.name)
    # Every entry is checked before the first input is read: a bad one fails the job up front.
    files = [f for entry in entries if (f := _input_file(path, root, entry)) is not None]
    for name, target in files:
        yield _read_regular(path, name, target)


def _input_file(path: str, root: Path, entry: os.DirEntry[str]) -> tuple[str, Path] | None:
    """Where the input of ``entry`` is read from; None for a directory, which is skipped.

    Raises:
        InputError: a symlink leading nowhere or out of the directory, or an entry that
            is not a regular file or a directory (a FIFO, socket or device).
    """
    target = Path(entry.path)
    if entry.is_symlink():
        try:
            target = target.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
            raise InputError(f"--input-dir {path}: {entry.name} is a symlink to nothing readable") from None
        if not target.is_relative_to(root):
            raise InputError(f"--input-dir {path}: {entry.name} is a symlink to {target}, outside the directory")
    mode = os.stat(target, follow_symlinks=False).st_mode
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        raise InputError(f"--input-dir {path}: {entry.name} is {_kind(mode)}, not a regular file")
    return entry.name, target


def _read_regular(path: str, name: str, target: Path) -> bytes:
    # O_NONBLOCK: if a FIFO took the file's place since it was checked, opening it
    # returns at once instead of waiting for a writer (and fstat then refuses it).
    fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"--input-dir {path}: {name} is {_kind(mode)}, not a regular file")
        return f.read()


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "a special file")


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
