"""The four input forms and the output line, exactly as documented."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from meshnode.core.outcome import TaskOutcome
from meshnode.errors import InputError
from meshnode.jobio import InputSpec, output_value, read_inputs, result_record


def read(kind: str, source: object) -> list[bytes]:
    return list(read_inputs(InputSpec(kind, str(source))))  # type: ignore[arg-type]


def test_jsonl_lines_without_endings_skipping_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"a": 1}\n\n  \r\n{"b": 2}\r\nlast line, no newline')
    assert read("jsonl", f) == [b'{"a": 1}', b'{"b": 2}', b"last line, no newline"]


def test_csv_rows_become_compact_json_in_header_order(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text('z,a,text\n1,2,"hello, world"\n\n3,4,"caf\u00e9 ""quoted"""\n', encoding="utf-8")
    rows = read("csv", f)
    assert rows == [b'{"z":"1","a":"2","text":"hello, world"}', '{"z":"3","a":"4","text":"caf\u00e9 \\"quoted\\""}'.encode()]
    assert list(json.loads(rows[0])) == ["z", "a", "text"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("a,b\n1,2,3\n", "line 2: 3 fields"), ("a,a\n1,2\n", "repeats")],
)
def test_bad_csv_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "in.csv"
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        read("csv", f)


def test_dir_regular_files_sorted_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(b"\x00B")
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "sub").mkdir()
    assert read("dir", tmp_path) == [b"A", b"\x00B"]


def test_range_gives_decimal_indexes() -> None:
    assert read("range", 3) == [b"0", b"1", b"2"]
    assert read("range", 0) == []
    with pytest.raises(InputError, match="count"):
        read("range", "many")


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--input-jsonl .*nope"):
        read("jsonl", tmp_path / "nope")


def test_output_is_json_when_it_is_json_else_base64() -> None:
    assert output_value(b'{"hits": 3}') == {"hits": 3}
    assert output_value(b"\xff\x00") == {"base64": base64.b64encode(b"\xff\x00").decode()}
    assert output_value(b"NaN") == {"base64": base64.b64encode(b"NaN").decode()}  # not JSON, whatever Python says
    assert output_value(b"not json") == {"base64": base64.b64encode(b"not json").decode()}


def test_result_records() -> None:
    ok = result_record(4, TaskOutcome(b"[1,2]", None, 10, 0.1), ["peer"])
    assert list(ok) == ["index", "status", "output", "sha256", "executors"]
    assert ok["output"] == [1, 2] and ok["status"] == "ok" and len(ok["sha256"]) == 64
    bad = result_record(5, TaskOutcome.failed("trap", "wasm trap: unreachable"), ["peer"])
    assert bad["status"] == "error" and bad["error"] == {"code": "trap", "message": "wasm trap: unreachable"}
    assert bad["output"] is None and bad["sha256"] is None
