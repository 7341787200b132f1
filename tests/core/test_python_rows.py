"""Python jobs as subtasks: rows in batches and back, one result line per row (pure; hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.python_rows import (
    MAX_ROWS_PER_SUBTASK, batch_rows, decode_batch, decode_script, default_rows_per_subtask, encode_batch,
    encode_row, encode_script, row_records, rows_in_subtask,
)  # fmt: skip
from meshnode.errors import WireError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)  # fmt: skip
rows = st.lists(json_values.map(encode_row) | st.binary(max_size=30).map(encode_row), max_size=40)


@given(rows, st.integers(1, 50))
def test_batches_carry_every_row_once_in_order(encoded: list[bytes], per: int) -> None:
    batches = list(batch_rows(encoded, per))
    assert len(batches) == -(-len(encoded) // per)
    seen: list[bytes] = []
    for index, batch in enumerate(batches):
        first, got = decode_batch(batch)
        assert first == index * per == len(seen)
        assert list(rows_in_subtask(index, len(encoded), per)) == list(range(first, first + len(got)))
        seen.extend(got)
    assert seen == encoded


@given(st.binary(max_size=64))
def test_a_damaged_batch_is_a_wire_error_never_a_crash(data: bytes) -> None:
    try:
        first, got = decode_batch(data)
    except WireError:
        return
    assert encode_batch(first, got) == data


def test_rows_keep_their_kind() -> None:
    assert encode_row({"a": 1}) == b'J{"a":1}' and encode_row(b"\x00raw") == b"B\x00raw"
    with pytest.raises(ValueError):
        encode_row(float("nan"))
    assert decode_script(encode_script("f.py", "def main(row): ...\n")) == ("f.py", "def main(row): ...\n")
    with pytest.raises(WireError):
        decode_script(b"\x00asm\x01\x00\x00\x00")


@given(st.integers(0, 10**9), st.integers(0, 10**12), st.integers(0, 10**12))
def test_the_default_grouping_amortizes_start_up_but_still_spreads_the_job(n: int, startup: int, row: int) -> None:
    per = default_rows_per_subtask(n, startup, row)
    assert 1 <= per <= MAX_ROWS_PER_SUBTASK
    if per < MAX_ROWS_PER_SUBTASK and per * 4 < n:  # not held back by the spread: rows outweigh start-up
        assert per * max(row, 1) >= 4 * startup
    assert per <= max(1, -(-n // 4))  # at least 4 subtasks when there are 4 rows


def test_the_default_grouping_for_measured_scripts() -> None:
    assert default_rows_per_subtask(20_000, 90_000_000, 180_000) == 2_000  # trivial: 30 ms start-up, cheap rows
    assert default_rows_per_subtask(4_000, 930_000_000, 2_300_000) == 1_000  # numpy: spread 4 ways
    assert default_rows_per_subtask(20, 920_000_000, 35_000_000) == 5  # examples/blackbody.py: spread 4 ways
    assert default_rows_per_subtask(20_000, 920_000_000, 35_000_000) == 106  # its start-up is a fifth


def extra() -> dict[str, Any]:
    return {"sha256": "ab", "executors": ["p1", "p2"]}


def test_a_subtasks_output_becomes_one_line_per_row() -> None:
    output = json.dumps([{"status": "ok", "output": 4, "log": "hi\n"},
                         {"status": "error", "error": {"code": "task_error", "message": "E: x"}}]).encode()  # fmt: skip
    lines = row_records(1, 4, 2, output, None, extra())
    assert lines == [
        {"index": 2, "status": "ok", "output": 4, "log": "hi\n", "sha256": "ab", "executors": ["p1", "p2"]},
        {"index": 3, "status": "error", "output": None, "error": {"code": "task_error", "message": "E: x"},
         "sha256": "ab", "executors": ["p1", "p2"]},
    ]  # fmt: skip


def test_a_failed_subtask_fails_each_of_its_rows_and_a_short_output_is_not_trusted() -> None:
    failed = row_records(2, 5, 2, None, {"code": "fuel_exhausted", "message": "used all"}, extra())
    assert [(r["index"], r["error"]["code"]) for r in failed] == [(4, "fuel_exhausted")]
    short = row_records(0, 5, 2, b'[{"status":"ok","output":1}]', None, extra())
    assert [(r["index"], r["error"]["code"]) for r in short] == [(0, "python_runtime"), (1, "python_runtime")]


def test_a_manifest_says_whether_it_is_a_python_job_consistently() -> None:
    import dataclasses

    from meshnode.core.manifest import JobManifest, Replication, TaskLimits
    from meshnode.core.peer_id import PeerId

    base = JobManifest(
        job_id=b"J" * 16, owner=PeerId.from_public_key(b"k" * 32), label="", module_sha256=b"m" * 32, module_size=99,
        entry="run", runtime="python-3.15-abc", rows=10, rows_per_subtask=3, limits=TaskLimits(1, 1 << 16, 1, 0),
        nan_canonical=False, replication=Replication(1, 1, 1), subtask_count=4, inputs_root=b"r" * 32,
        created_ms=1, expires_ms=2,
    )  # fmt: skip
    assert base.check() is None
    assert "not 5 subtasks" in (dataclasses.replace(base, subtask_count=5).check() or "")
    assert dataclasses.replace(base, runtime="wasm").check() is not None
    assert dataclasses.replace(base, runtime="wasm", rows=0, rows_per_subtask=0).check() is None
    assert dataclasses.replace(base, rows=0).check() is not None
