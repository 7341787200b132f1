"""Python tasks from the command line: ``exec script.py`` over every input form, and ``python-setup``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import PreparedPython

from ..waiting import JOB
from .nodes import meshnode

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "blackbody.py"
STARS = ROOT / "examples" / "stars.csv"


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_python_setup_compiles_once_with_progress_and_then_is_ready_at_once(python_runtime: PreparedPython) -> None:
    compiled = "compiling the Python runtime" in python_runtime.setup_stderr  # this run compiled it (CI always does)
    if compiled:
        said = python_runtime.setup_stderr.splitlines()
        assert said[0].startswith("compiling the Python runtime for this machine, once")
        assert "the Python runtime is ready (" in python_runtime.setup_stderr
    start = time.monotonic()
    again = meshnode("python-setup")
    assert again.returncode == 0 and "the Python runtime was ready in" in again.stderr and "compiling" not in again.stderr
    assert not compiled or time.monotonic() - start < python_runtime.seconds / 4


def test_exec_runs_main_on_each_csv_row_with_typed_values(python_runtime: PreparedPython, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("name,count,ratio,when\na,1,0.5,2024-01-01\nb,2,,2024-02-01\nc,3,2,\n")
    script = tmp_path / "types.py"
    script.write_text("def main(row):\n    return {k: type(v).__name__ for k, v in row.items()} | {'n': row['count'] * 2}\n")
    typed = meshnode("exec", str(script), "--input-csv", str(data), "--data-dir", str(tmp_path / "d"))
    assert typed.returncode == 0, typed.stderr
    outputs = [line["output"] for line in lines(typed.stdout)]
    assert outputs[0] == {"name": "str", "count": "int", "ratio": "float", "when": "str", "n": 2}
    assert outputs[1]["ratio"] == "NoneType" and outputs[2]["when"] == "str"
    text = meshnode("exec", str(script), "--input-csv", str(data), "--csv-strings", "--data-dir", str(tmp_path / "d"))
    assert [line["output"]["count"] for line in lines(text.stdout)] == ["str"] * 3
    assert lines(text.stdout)[0]["output"]["n"] == "11"  # "1" * 2


def test_exec_takes_json_lines_files_and_a_range(python_runtime: PreparedPython, tmp_path: Path) -> None:
    script = tmp_path / "kinds.py"
    script.write_text("def main(row):\n    return [type(row).__name__, len(row) if hasattr(row, '__len__') else row]\n")
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"a": [1, 2]}\n\n"text"\n')
    files = tmp_path / "files"
    files.mkdir()
    (files / "one.bin").write_bytes(b"\x00\x01\x02")
    (files / "two.bin").write_bytes(b"")
    expect = {
        ("--input-jsonl", str(jsonl)): [["dict", 1], ["str", 4]],
        ("--input-dir", str(files)): [["bytes", 3], ["bytes", 0]],
        ("--range", "3"): [["int", 0], ["int", 1], ["int", 2]],
    }
    for flags, outputs in expect.items():
        done = meshnode("exec", str(script), *flags, "--data-dir", str(tmp_path / "d"))
        assert done.returncode == 0, done.stderr
        got = lines(done.stdout)
        assert [line["index"] for line in got] == list(range(len(outputs)))
        assert [line["output"] for line in got] == outputs


def test_a_raising_row_is_its_error_and_the_others_go_on(python_runtime: PreparedPython, tmp_path: Path) -> None:
    script = tmp_path / "raises.py"
    script.write_text("def main(row):\n    print('row', row)\n    return 1 / (row - 2)\n")
    done = meshnode("exec", str(script), "--range", "4", "--rows-per-subtask", "3", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1  # a row failed
    got = lines(done.stdout)
    assert [line["status"] for line in got] == ["ok", "ok", "error", "ok"]
    assert got[2]["error"]["code"] == "task_error" and got[2]["error"]["message"] == "ZeroDivisionError: division by zero"
    assert "line 3, in main" in got[2]["error"]["traceback"] and got[2]["log"] == "row 2\n"
    assert got[3]["output"] == 1.0 and "log" in got[3]


def test_a_row_main_refuses_is_counted_failed_with_its_message_and_exit_1(
    python_runtime: PreparedPython, tmp_path: Path
) -> None:
    script = tmp_path / "checks.py"
    script.write_text("def main(row):\n    if row['seed'] < 0:\n        raise ValueError(f\"seed must not be negative, got {row['seed']}\")\n"
                      "    return row['seed'] * 2\n")  # fmt: skip
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("seed\n3\n-1\n5\n")
    done = meshnode("exec", str(script), "--input-csv", str(seeds), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1
    got = lines(done.stdout)
    assert [line["status"] for line in got] == ["ok", "error", "ok"] and got[0]["output"] == 6
    assert got[1]["output"] is None
    assert got[1]["error"]["code"] == "task_error" and got[1]["error"]["message"] == "ValueError: seed must not be negative, got -1"
    assert "line 3, in main" in got[1]["error"]["traceback"]
    assert "3 rows, 2 ok, 1 failed" in done.stderr


def test_a_syntax_error_stops_exec_before_any_row_with_its_line(python_runtime: PreparedPython, tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import math\n\ndef main(row)\n    return row\n")
    done = meshnode("exec", str(script), "--range", "3", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == "meshnode exec: broken.py, line 3: SyntaxError: expected ':'"
    missing = tmp_path / "nomain.py"
    missing.write_text("def run(row):\n    return row\n")
    done = meshnode("exec", str(missing), "--range", "3", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2 and "nomain.py defines no function main(row)" in done.stderr


def test_the_example_runs_with_one_command(python_runtime: PreparedPython, tmp_path: Path) -> None:
    done = meshnode("exec", str(EXAMPLE), "--input-csv", str(STARS), "--data-dir", str(tmp_path / "d"), timeout=JOB)
    assert done.returncode == 0, done.stderr
    by_star = {line["output"]["star"]: line["output"] for line in lines(done.stdout)}
    sun = by_star["Sun"]
    assert sun["luminosity_sun"] == 1.0 and round(sun["flux_w_m2"]) == 1360 and 495 < sun["peak_nm"] < 505
    assert all(star["stefan_boltzmann_check"] == 1.0 for star in by_star.values())
