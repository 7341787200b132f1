"""The Python runtime in the real sandbox: main(row) over rows, determinism, limits and hostile scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import wasmtime

from meshnode.config import DEFAULT_LIMITS
from meshnode.core.manifest import TaskLimits
from meshnode.core.outcome import TaskOutcome
from meshnode.core.python_rows import encode_batch, encode_row, encode_script
from meshnode.errors import SandboxError
from meshnode.sandbox.python_runtime import PythonRuntime, check_imports
from meshnode.sandbox.runtime import Sandbox
from tests.conftest import PreparedPython

SMALL = TaskLimits(fuel=20_000_000_000, memory=256 << 20, timeout_ms=120_000, max_output=1 << 20)

# Everything that would differ between runs or hosts without the runtime's fixed answers.
DETERMINISM = """
import os, random, time, uuid
import numpy as np

def main(row):
    rng = np.random.default_rng()
    return {
        "row": row, "time": time.time(), "monotonic": time.monotonic(), "random": random.random(),
        "urandom": os.urandom(8).hex(), "uuid": str(uuid.uuid4()), "hash": hash("meshnode"),
        "set": list({"alpha", "beta", "gamma", "delta"}), "dict": list({str(i): i for i in range(5)}),
        "numpy": rng.random(3), "legacy": np.random.rand(2), "sum": float(np.sum(np.linspace(0, 1, 1001) ** 0.5)),
        "stat": [os.stat("/usr/local/lib/python315.zip").st_ino, os.stat("/usr/local/lib/python315.zip").st_mtime],
    }
"""


@pytest.fixture(scope="module")
def sandbox(python_runtime: PreparedPython) -> Iterator[Sandbox]:
    with Sandbox(slots=1) as box:
        box.prepare_python()
        yield box


def run(sandbox: Sandbox, source: str, rows: list[Any], limits: TaskLimits = SMALL, first: int = 0) -> TaskOutcome:
    script = sandbox.load_python(encode_script("task.py", source))
    return sandbox.run_sync(script, encode_batch(first, [encode_row(r) for r in rows]), limits)


def records(outcome: TaskOutcome) -> list[dict[str, Any]]:
    assert outcome.output is not None, outcome.error
    decoded: list[dict[str, Any]] = json.loads(outcome.output)
    return decoded


def test_main_runs_on_each_row_and_a_raising_row_is_that_rows_error(sandbox: Sandbox) -> None:
    source = "def main(row):\n    print('seen', row)\n    return 10 // row\n"
    got = records(run(sandbox, source, [1, 0, 5]))
    assert got[0] == {"status": "ok", "output": 10, "log": "seen 1\n"}
    assert got[2] == {"status": "ok", "output": 2, "log": "seen 5\n"}
    error = got[1]["error"]
    assert got[1]["status"] == "error" and error["code"] == "task_error"
    assert error["message"] == "ZeroDivisionError: division by zero"
    assert 'File "task.py", line 3, in main' in error["traceback"] and "return 10 // row" in error["traceback"]


def test_the_same_rows_give_the_same_bytes_and_fuel_in_separate_stores(sandbox: Sandbox) -> None:
    runs = [run(sandbox, DETERMINISM, [0, 1, 2]) for _ in range(3)]
    assert all(r.error is None for r in runs)
    assert len({r.output for r in runs}) == 1 and len({r.fuel_used for r in runs}) == 1
    rows = records(runs[0])
    assert rows[0]["output"]["time"] < rows[0]["output"]["time"] + 1  # a number, not an error
    assert rows[0]["output"]["urandom"] != rows[1]["output"]["urandom"]  # each row has a stream of its own
    assert rows[0]["output"]["numpy"] != rows[1]["output"]["numpy"]
    assert rows[0]["output"]["stat"] == [3, 0]  # file metadata from the fixed table, not the host


def test_a_rows_result_does_not_depend_on_the_rows_before_it_in_its_subtask(sandbox: Sandbox) -> None:
    together = records(run(sandbox, DETERMINISM, [10, 11, 12]))
    alone = records(run(sandbox, DETERMINISM, [12], first=2))
    assert together[2] == alone[0]


def test_the_same_script_gives_the_same_bytes_and_fuel_in_another_process(sandbox: Sandbox) -> None:
    here = run(sandbox, DETERMINISM, [0, 1])
    program = (
        "import json, sys\n"
        "from meshnode.sandbox.runtime import Sandbox\n"
        "from meshnode.core.python_rows import encode_batch, encode_row, encode_script\n"
        "from tests.sandbox.test_python_runtime import SMALL, DETERMINISM\n"
        "with Sandbox(slots=1) as box:\n"
        "    box.prepare_python()\n"
        "    s = box.load_python(encode_script('task.py', DETERMINISM))\n"
        "    o = box.run_sync(s, encode_batch(0, [encode_row(0), encode_row(1)]), SMALL)\n"
        "    sys.stdout.write(json.dumps({'fuel': o.fuel_used, 'output': o.output.decode()}))\n"
    )
    other = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300, check=True)
    there = json.loads(other.stdout)
    assert there == {"fuel": here.fuel_used, "output": (here.output or b"").decode()}


def test_numpy_pandas_scipy_and_sklearn_import_under_the_default_limits(sandbox: Sandbox) -> None:
    source = (
        "import numpy, pandas, scipy.optimize, sklearn.linear_model\n"
        "def main(row):\n"
        "    frame = pandas.DataFrame({'x': [1.0, 2.0, 3.0], 'y': [2.0, 4.0, 6.0]})\n"
        "    model = sklearn.linear_model.LinearRegression().fit(frame[['x']], frame['y'])\n"
        "    return round(float(model.coef_[0]), 6)\n"
    )
    assert records(run(sandbox, source, [0], DEFAULT_LIMITS)) == [{"status": "ok", "output": 2.0}]


def test_the_host_is_out_of_reach_with_clear_python_errors(sandbox: Sandbox) -> None:
    source = (
        "import os, socket, subprocess\n"
        "def main(row):\n"
        "    if row == 'passwd': return open('/etc/passwd').read()\n"
        "    if row == 'write': return open('/usr/local/lib/x', 'w').write('x')\n"
        "    if row == 'socket': return socket.create_connection(('127.0.0.1', 7351))\n"
        "    if row == 'system': return os.system('id')\n"
        "    if row == 'subprocess': return subprocess.run(['id'])\n"
    )
    got = records(run(sandbox, source, ["passwd", "write", "socket", "system", "subprocess"]))
    messages = [r["error"]["message"] for r in got]
    assert all(r["status"] == "error" and r["error"]["code"] == "task_error" for r in got)
    assert messages[0].startswith(("FileNotFoundError", "PermissionError")) and "/etc/passwd" in messages[0]
    assert messages[1].startswith(("PermissionError", "OSError", "FileNotFoundError"))
    assert messages[2].split(":")[0] in ("OSError", "PermissionError", "ConnectionRefusedError", "AttributeError")
    assert messages[3].startswith("AttributeError") and "system" in messages[3]
    assert messages[4].split(":")[0] in ("OSError", "PermissionError", "RuntimeError", "NotImplementedError")


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("def main(row):\n    while True: pass\n", "fuel_exhausted"),
        ("import sys\nsys.setrecursionlimit(10**6)\ndef main(row):\n    return main(row)\n", "fuel_exhausted"),
        ("import json\ndef main(row):\n    return json.loads('[' * 100000 + ']' * 100000)\n", "trap"),
        ("import os\ndef main(row):\n    os._exit(3)\n", "trap"),
    ],
    ids=["infinite-loop", "deep-recursion", "deep-c-recursion", "exit"],
)
def test_hostile_scripts_end_with_a_stable_code(sandbox: Sandbox, source: str, code: str) -> None:
    limits = TaskLimits(fuel=2_000_000_000, memory=256 << 20, timeout_ms=120_000, max_output=1 << 20)
    outcome = run(sandbox, source, [0], limits)
    assert outcome.error is not None and outcome.error.code == code, outcome
    assert records(run(sandbox, "def main(row):\n    return row + 1\n", [1])) == [{"status": "ok", "output": 2}]


def test_recursion_past_pythons_limit_is_the_rows_recursion_error(sandbox: Sandbox) -> None:
    got = records(run(sandbox, "def main(row):\n    return main(row)\n", [0]))
    assert got[0]["error"]["message"].startswith("RecursionError: maximum recursion depth exceeded")


def test_an_endless_loop_meets_the_timeout_when_fuel_is_plenty(sandbox: Sandbox) -> None:
    limits = TaskLimits(fuel=10**15, memory=256 << 20, timeout_ms=1500, max_output=1 << 20)
    outcome = run(sandbox, "def main(row):\n    while True: pass\n", [0], limits)
    assert outcome.error is not None and outcome.error.code == "timeout"


def test_a_memory_bomb_is_a_memory_error_row_and_a_huge_return_is_too_large(sandbox: Sandbox) -> None:
    bomb = records(run(sandbox, "def main(row):\n    return len(bytearray(1 << 30))\n", [0]))
    assert bomb[0]["status"] == "error" and bomb[0]["error"]["message"].startswith("MemoryError")
    huge = records(run(sandbox, "def main(row):\n    return 'x' * (2 << 20)\n", [0, 1]))
    assert [r["error"]["code"] for r in huge] == ["output_too_large", "output_too_large"]
    many = run(sandbox, "def main(row):\n    return 'x' * (600 << 10)\n", [0, 1])  # each fits, together not
    assert many.error is not None and many.error.code == "output_too_large"


def test_a_rows_log_is_bounded_and_top_level_prints_are_not_kept(sandbox: Sandbox) -> None:
    source = "print('loading')\ndef main(row):\n    for _ in range(row): print('y' * 999)\n    return row\n"
    small, big = records(run(sandbox, source, [1, 200]))
    assert small["log"] == "y" * 999 + "\n"
    assert len(big["log"]) < 66_000 and big["log"].endswith("[log cut: 134464 more characters]")


def test_what_json_cannot_hold_is_the_rows_error(sandbox: Sandbox) -> None:
    source = "import numpy as np\ndef main(row):\n    return [np.arange(3), float('nan'), object()][row]\n"
    got = records(run(sandbox, source, [0, 1, 2]))
    assert got[0] == {"status": "ok", "output": [0, 1, 2]}
    assert "NaN or infinity" in got[1]["error"]["message"]
    assert "not JSON" in got[2]["error"]["message"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def main(row:\n    return row\n", "task.py, line 1: SyntaxError: '(' was never closed"),
        ("x = 1\n\nprint(x)\n", "task.py defines no function main(row)"),
        ("import json\nimport torch\ndef main(row): pass\n", "task.py, line 2: ModuleNotFoundError: No module named 'torch'"),
        ("def main(row):\n  return 1\n 1 +\n", "task.py, line 3: IndentationError: unindent does not match any outer indentation level"),
    ],
)
def test_a_script_that_cannot_run_is_found_before_any_row(sandbox: Sandbox, source: str, message: str) -> None:
    problem = sandbox.check_python(sandbox.load_python(encode_script("task.py", source)), SMALL).problem
    assert problem is not None and problem["message"] == message and problem["code"] == "python_error"
    assert sandbox.check_python(sandbox.load_python(encode_script("task.py", "def main(row): pass\n")), SMALL).problem is None
    # run anyway (a job submitted without the check), every row fails with it: python_error, not a row's task_error
    got = records(run(sandbox, source, [1, 2]))
    assert [(r["status"], r["error"]["code"], r["error"]["message"]) for r in got] == [("error", "python_error", message)] * 2


def test_a_check_measures_start_up_and_the_first_row_in_fuel_the_same_every_time(sandbox: Sandbox) -> None:
    script = sandbox.load_python(encode_script("task.py", "import json\ndef main(row):\n    return sum(range(row))\n"))
    cheap, dear = (sandbox.check_python(script, SMALL, encode_row(n)) for n in (10, 100_000))
    assert cheap.problem is None and abs(cheap.startup_fuel - dear.startup_fuel) < cheap.startup_fuel / 200
    assert 10_000_000 < cheap.startup_fuel and 0 < cheap.row_fuel < 1_000_000 < dear.row_fuel
    assert sandbox.check_python(script, SMALL, encode_row(10)) == cheap
    three = sandbox.run_sync(script, encode_batch(0, [encode_row(100_000)] * 3), SMALL).fuel_used
    assert abs(dear.startup_fuel + 3 * dear.row_fuel - three) < three / 100


def test_a_first_row_that_never_ends_is_a_rows_cost_not_a_scripts_problem(sandbox: Sandbox) -> None:
    script = sandbox.load_python(encode_script("task.py", "def main(row):\n    while True: pass\n"))
    limits = TaskLimits(fuel=500_000_000, memory=256 << 20, timeout_ms=120_000, max_output=1 << 20)
    checked = sandbox.check_python(script, limits, encode_row(0))
    assert checked.problem is None and checked.startup_fuel + checked.row_fuel == limits.fuel


def test_the_runtime_may_import_only_the_allowed_wasi_calls(python_runtime: PreparedPython) -> None:
    engine = wasmtime.Engine()
    with_socket = wasmtime.Module(engine, '(module (import "wasi_snapshot_preview1" "sock_open" (func)))')
    with pytest.raises(SandboxError, match="sock_open, which is not allowed"):
        check_imports(with_socket)
    assert PythonRuntime.ready()
