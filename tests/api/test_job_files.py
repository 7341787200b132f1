"""The four input forms and the output line, exactly as documented."""

from __future__ import annotations

import base64
import csv
import json
import os
import socket
from pathlib import Path

import pytest

from meshnode.api import job_files as jobio
from meshnode.api.job_files import InputSpec, output_value, read_inputs, read_rows, result_record
from meshnode.core.outcome import TaskOutcome
from meshnode.errors import InputError


def read(kind: str, source: object, *, csv_strings: bool = False) -> list[bytes]:
    return list(read_inputs(InputSpec(kind, str(source)), csv_strings=csv_strings))  # type: ignore[arg-type]


def test_jsonl_lines_without_endings_skipping_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"a": 1}\n\n  \r\n{"b": 2}\r\nlast line, no newline')
    assert read("jsonl", f) == [b'{"a": 1}', b'{"b": 2}', b"last line, no newline"]


def test_csv_rows_become_compact_json_in_header_order(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text('z,a,text\n1,2,"hello, world"\n\n3,4,"caf\u00e9 ""quoted"""\n', encoding="utf-8")
    rows = read("csv", f)
    assert rows == [b'{"z":1,"a":2,"text":"hello, world"}', '{"z":3,"a":4,"text":"caf\u00e9 \\"quoted\\""}'.encode()]
    assert list(json.loads(rows[0])) == ["z", "a", "text"]
    text = read("csv", f, csv_strings=True)
    assert text == [b'{"z":"1","a":"2","text":"hello, world"}', '{"z":"3","a":"4","text":"caf\u00e9 \\"quoted\\""}'.encode()]


def test_csv_values_are_typed_per_column_for_a_module_as_for_a_script(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text("seed,samples,ratio,name,some,blank,odd\n"
                 "7,1000,0.5,a,1,,1\n"
                 "18446744073709551615,2,1e3,007,,,nan\n")  # fmt: skip
    spec = InputSpec("csv", str(f))
    rows = read("csv", f)
    assert rows == [
        b'{"seed":7,"samples":1000,"ratio":0.5,"name":"a","some":1,"blank":"","odd":"1"}',
        b'{"seed":18446744073709551615,"samples":2,"ratio":1000.0,"name":"007","some":null,"blank":"","odd":"nan"}',
    ]  # a column is a number only if every field parses: "nan" is no JSON number, so "odd" stays text
    assert [json.loads(row[1:]) for row in read_rows(spec)] == [json.loads(row) for row in rows]  # one typing for both
    text = [json.loads(row) for row in read("csv", f, csv_strings=True)]
    assert [json.loads(row[1:]) for row in read_rows(spec, csv_strings=True)] == text
    assert text[1] == {"seed": "18446744073709551615", "samples": "2", "ratio": "1e3", "name": "007", "some": "",
                       "blank": "", "odd": "nan"}  # fmt: skip


def test_an_unreadable_csv_file_names_it_when_typed_or_not(tmp_path: Path) -> None:
    for csv_strings in (False, True):
        with pytest.raises(InputError, match=f"cannot read --input-csv {tmp_path}/missing.csv"):
            read("csv", tmp_path / "missing.csv", csv_strings=csv_strings)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("a,b\n1,2,3\n", "line 2: 3 fields"), ("a,a\n1,2\n", "repeats")],
)
def test_bad_csv_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "in.csv"
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        read("csv", f)


def test_csv_fields_past_the_csv_module_default_are_read(tmp_path: Path) -> None:
    big = "x" * (1 << 20)  # eight times the csv module's default limit of 128 KiB
    f = tmp_path / "in.csv"
    f.write_text(f"name,text\nsmall,hi\nbig,{big}\n", encoding="utf-8")
    assert read("csv", f) == [b'{"name":"small","text":"hi"}', f'{{"name":"big","text":"{big}"}}'.encode()]


def test_reading_csv_leaves_the_process_wide_field_limit_alone(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text("a\n1\n2\n", encoding="utf-8")
    before = csv.field_size_limit()
    rows = read_inputs(InputSpec("csv", str(f)), csv_strings=True)
    assert next(rows) == b'{"a":"1"}'
    assert csv.field_size_limit() == before  # not even between two rows
    assert list(rows) == [b'{"a":"2"}']
    assert read("csv", f) == [b'{"a":1}', b'{"a":2}'] and csv.field_size_limit() == before  # typed: read twice
    assert csv.field_size_limit() == before


def test_a_csv_field_over_the_limit_names_the_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobio, "CSV_FIELD_MAX", 1024)
    f = tmp_path / "in.csv"
    f.write_text(f"a,b\n1,{'y' * 1000}\n2,{'z' * 2000}\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read("csv", f)
    message = str(caught.value)
    assert message == f"{f}, line 3: a field is over the 1KiB limit (counted in characters)"


def test_dir_regular_files_sorted_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(b"\x00B")
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "sub").mkdir()
    assert read("dir", tmp_path) == [b"A", b"\x00B"]


def test_dir_follows_symlinks_to_files_inside_it(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.txt").write_bytes(b"deep")
    (tmp_path / "b.link").symlink_to("a.txt")
    (tmp_path / "c.link").symlink_to(tmp_path / "sub" / "deep.txt")
    (tmp_path / "d.link").symlink_to("sub")  # a directory, like sub itself: skipped
    assert read("dir", tmp_path) == [b"A", b"A", b"deep"]


def entry_error(directory: Path) -> str:
    with pytest.raises(InputError) as caught:
        read("dir", directory)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_dir_refuses_symlinks_out_of_it_or_to_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"not an input")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.txt").write_bytes(b"A")
    (inputs / "escape").symlink_to("../secret")
    assert entry_error(inputs) == f"--input-dir {inputs}: escape is a symlink to {outside}, outside the directory"
    (inputs / "escape").unlink()
    (inputs / "dangling").symlink_to("missing")
    assert entry_error(inputs) == f"--input-dir {inputs}: dangling is a symlink to nothing readable"


def test_dir_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"A")
    os.mkfifo(tmp_path / "pipe")
    # opening the FIFO would block this test for ever: no process ever writes to it
    assert entry_error(tmp_path) == f"--input-dir {tmp_path}: pipe is a FIFO, not a regular file"


def test_dir_refuses_sockets_and_devices(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert entry_error(tmp_path) == f"--input-dir {tmp_path}: sock is a socket, not a regular file"
    # a device cannot be made without root: check the real /dev/null as an entry of /dev
    with os.scandir("/dev") as entries:
        null = next(e for e in entries if e.name == "null")
    with pytest.raises(InputError, match="^--input-dir /dev: null is a character device, not a regular file$"):
        jobio._input_file("/dev", Path("/dev"), null)


def test_a_fifo_swapped_in_after_the_check_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match="pipe is a FIFO"):
        jobio._read_regular(str(tmp_path), "pipe", tmp_path / "pipe")


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
