"""Python tasks as subtasks: the script as a job's module, rows grouped into subtask inputs, row results.

A Python job runs a script's ``main(row)`` over rows. The job's module is the
script (``encode_script``); each subtask input is a batch of consecutive rows
(``encode_batch``), and its output is a JSON array with one record per row,
which ``row_records`` turns back into one result line per row. Everything the
mesh does to a subtask (stealing, replicas, verification, the journal) is
unchanged: a batch is just an input, its output just an output.

A row on the wire is a kind byte and its payload: ``J`` and a JSON text (a CSV
row, a JSON line, a range index) or ``B`` and raw bytes (a file).

Batch layout (little-endian)::

    u64 first row index | u32 row count | count x (u8 kind | u64 length | payload)
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from ..errors import WireError

__all__ = [
    "SCRIPT_MAGIC", "batch_rows", "check_row", "default_rows_per_subtask", "decode_batch", "decode_script", "encode_batch", "encode_row",
    "encode_script", "is_script", "row_records", "rows_in_subtask",
]  # fmt: skip

SCRIPT_MAGIC: Final = b"meshnode-python-task/1\n"
JSON_ROW: Final = b"J"
BYTES_ROW: Final = b"B"
_HEADER: Final = struct.Struct("<QI")
_ROW: Final = struct.Struct("<cQ")
MAX_NAME: Final = 200


def encode_script(name: str, source: str) -> bytes:
    """A script as a job's module: a magic line, its file name (for tracebacks), then its source."""
    clean = name.replace("\n", " ")[:MAX_NAME] or "script.py"
    return SCRIPT_MAGIC + clean.encode("utf-8") + b"\n" + source.encode("utf-8")


def is_script(module: bytes) -> bool:
    return module.startswith(SCRIPT_MAGIC)


def decode_script(module: bytes) -> tuple[str, str]:
    """The file name and source of a script made by ``encode_script``.

    Raises:
        WireError: not a script, or not UTF-8.
    """
    if not is_script(module):
        raise WireError("not a Python task")
    head, sep, source = module[len(SCRIPT_MAGIC) :].partition(b"\n")
    try:
        return head.decode("utf-8"), source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"the script is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def encode_row(value: Any) -> bytes:
    """One row: bytes stay bytes (a file's contents), anything else is JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return BYTES_ROW + bytes(value)
    return JSON_ROW + json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def check_row(row: bytes, index: int) -> None:
    """Raises ValueError unless ``row`` is what ``encode_row`` makes: ``J`` and JSON text, or ``B`` and bytes."""
    if row[:1] == BYTES_ROW:
        return
    if row[:1] != JSON_ROW:
        raise ValueError(f"row {index} is neither JSON (J...) nor bytes (B...)")
    try:
        json.loads(row[1:], parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"row {index} is not JSON text: {str(exc)[:100]}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode_batch(first: int, rows: Sequence[bytes]) -> bytes:
    """Rows ``first`` .. ``first + len(rows) - 1`` (each from ``encode_row``) as one subtask input."""
    parts = [_HEADER.pack(first, len(rows))]
    for row in rows:
        parts.append(_ROW.pack(row[:1], len(row) - 1))
        parts.append(row[1:])
    return b"".join(parts)


def decode_batch(data: bytes) -> tuple[int, list[bytes]]:
    """The first row's index and the rows (kind byte and payload) of a batch.

    Raises:
        WireError: not a well-formed batch.
    """
    if len(data) < _HEADER.size:
        raise WireError("a row batch is shorter than its header")
    first, count = _HEADER.unpack_from(data)
    rows, at = [], _HEADER.size
    for _ in range(count):
        if at + _ROW.size > len(data):
            raise WireError("a row batch ends inside a row header")
        kind, size = _ROW.unpack_from(data, at)
        at += _ROW.size
        if kind not in (JSON_ROW, BYTES_ROW) or at + size > len(data):
            raise WireError("a row batch holds a row of unknown kind or past its end")
        rows.append(kind + data[at : at + size])
        at += size
    if at != len(data):
        raise WireError("a row batch has bytes after its last row")
    return first, rows


def batch_rows(rows: Iterable[bytes], rows_per_subtask: int) -> Iterator[bytes]:
    """Group encoded rows into subtask inputs of ``rows_per_subtask`` rows (the last may be shorter)."""
    if rows_per_subtask < 1:
        raise ValueError("rows_per_subtask must be at least 1")
    batch: list[bytes] = []
    first = 0
    for row in rows:
        batch.append(row)
        if len(batch) == rows_per_subtask:
            yield encode_batch(first, batch)
            first += len(batch)
            batch = []
    if batch:
        yield encode_batch(first, batch)


STARTUP_SHARE: Final = 4  # a subtask's rows cost at least 4x its start-up (start-up is at most a fifth)
MIN_SUBTASKS: Final = 4  # but a job is spread over at least this many subtasks, when it has the rows
MAX_ROWS_PER_SUBTASK: Final = 10_000


def default_rows_per_subtask(rows: int, startup_fuel: int, row_fuel: int) -> int:
    """How many rows a subtask carries unless the submitter says, from the script's measured cost.

    Every subtask starts an interpreter and runs the script's top level: 30 ms
    bare, 0.3 s with numpy, 2 s with pandas. ``startup_fuel`` is what that cost
    and ``row_fuel`` what the first row cost (``Sandbox.check_python``): a
    subtask carries enough rows to outweigh its start-up ``STARTUP_SHARE``
    times, but a job is still split ``MIN_SUBTASKS`` ways. Fuel, not time, so
    every node that measures gets the same figure, and ``exec`` and ``submit``
    group alike.
    """
    amortizing = -(-STARTUP_SHARE * startup_fuel // max(1, row_fuel))
    spreading = -(-rows // MIN_SUBTASKS)
    return max(1, min(MAX_ROWS_PER_SUBTASK, amortizing, spreading))


def rows_in_subtask(index: int, rows: int, rows_per_subtask: int) -> range:
    """The row indices subtask ``index`` carries, in a job of ``rows`` rows."""
    start = index * rows_per_subtask
    return range(start, min(rows, start + rows_per_subtask))


def _row_output(record: dict[str, Any], row: int) -> dict[str, Any]:
    line: dict[str, Any] = {"index": row, "status": record.get("status")}
    if record.get("status") == "ok":
        line["output"] = record.get("output")
    else:
        error = record.get("error")
        line["output"] = None
        line["error"] = error if isinstance(error, dict) else {"code": "python_error", "message": str(error)}
    if record.get("log"):
        line["log"] = record["log"]
    return line


def row_records(
    index: int, rows: int, rows_per_subtask: int, output: bytes | None, error: dict[str, Any] | None,
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """The result lines of subtask ``index``: one per row, each with ``extra`` (sha256, executors) added.

    A subtask that failed as a whole (fuel, time, memory) fails each of its rows
    with its error; an output that is not the runner's array of records (it
    cannot be, from the runner; an executor that lies is outvoted first) fails
    them with ``python_runtime``.
    """
    span = rows_in_subtask(index, rows, rows_per_subtask)
    records: list[Any] | None = None
    if output is not None:
        try:
            records = json.loads(output)
        except (UnicodeDecodeError, ValueError, RecursionError):
            records = None
        if not isinstance(records, list) or len(records) != len(span) or not all(isinstance(r, dict) for r in records):
            error = {"code": "python_runtime", "message": f"the runner's output is not {len(span)} row records",
                     "base64": base64.b64encode(output[:256]).decode("ascii")}  # fmt: skip
            records = None
    lines = []
    for position, row in enumerate(span):
        if records is not None:
            line = _row_output(records[position], row)
        else:
            line = {"index": row, "status": "error", "output": None, "error": dict(error or {})}
        line.update(extra)
        lines.append(line)
    return lines
