"""A task that refuses its input, on a mesh of two node processes: the subtask (or row) fails with
task_error and the task's message, both nodes agree on it, and ``submit`` exits 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import PreparedPython

from ..waiting import JOB
from .nodes import NodeProcess, meshnode, nodes  # noqa: F401  (nodes is a fixture)
from .test_python_mesh import mesh

ROOT = Path(__file__).resolve().parents[2]
MONTE_CARLO_PI = str(ROOT / "tasks_wasm" / "monte_carlo_pi.wasm")


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def without_executors(text: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k not in ("executors", "verified_by")} for record in records(text)]


def peer_id(node: NodeProcess) -> str:
    return str(json.loads((node.data_dir / "api.json").read_text())["peer_id"])


def test_a_module_refusing_its_input_fails_those_subtasks_on_both_nodes_and_submit_exits_1(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    a, b = mesh(tmp_path, nodes, 2)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"seed":7,"samples":1000000}\n{"seed":"seven","samples":10}\n{"seed":3,"samples":-1}\n')
    out = tmp_path / "results.jsonl"
    submitted = meshnode("submit", MONTE_CARLO_PI, "--input-jsonl", str(jobs), "--output", str(out),
                         "--data-dir", str(a.data_dir), timeout=JOB)  # fmt: skip
    assert submitted.returncode == 1, submitted.stderr + a.stderr + b.stderr
    got = records(out.read_text())
    assert [r["status"] for r in got] == ["ok", "error", "error"]
    assert got[0]["output"] == {"samples": 1000000, "hits": 785871}
    assert [r["error"] for r in got[1:]] == [
        {"code": "task_error", "message": "seed must be an integer in 0..18446744073709551615"},
        {"code": "task_error", "message": "samples must be an integer in 0..1000000000000"},
    ]
    # a failure verified like an output: both nodes ran it and agreed
    assert all(sorted(r["executors"]) == sorted([peer_id(a), peer_id(b)]) for r in got)
    local = meshnode("exec", MONTE_CARLO_PI, "--input-jsonl", str(jobs), "--data-dir", str(tmp_path / "x"))
    assert local.returncode == 1 and without_executors(local.stdout) == without_executors(out.read_text())

    job_id = json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout)[0]["job_id"]
    status = json.loads(meshnode("status", job_id, "--json", "--data-dir", str(a.data_dir)).stdout)
    assert (status["verified"], status["failed"], status["disputed"]) == (1, 2, 0)
    again = meshnode("results", job_id, "--data-dir", str(a.data_dir))
    assert again.returncode == 1 and again.stdout == out.read_text()


def test_a_script_raising_for_a_row_fails_that_row_on_both_nodes_and_submit_exits_1(
    python_runtime: PreparedPython, tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    a, b = mesh(tmp_path, nodes, 2)
    script = tmp_path / "checks.py"
    script.write_text("def main(row):\n    if row['seed'] < 0:\n        raise ValueError(f\"seed must not be negative, got {row['seed']}\")\n"
                      "    return row['seed'] * 2\n")  # fmt: skip
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("seed\n3\n-1\n5\n-7\n")
    flags = ["--input-csv", str(seeds), "--rows-per-subtask", "2"]
    submitted = meshnode("submit", str(script), *flags, "--data-dir", str(a.data_dir), timeout=JOB)
    assert submitted.returncode == 1, submitted.stderr + a.stderr + b.stderr
    got = records(submitted.stdout)
    assert [r["status"] for r in got] == ["ok", "error", "ok", "error"]
    assert [r["output"] for r in got] == [6, None, 10, None]
    assert [r["error"]["code"] for r in got if r["status"] == "error"] == ["task_error", "task_error"]
    assert [r["error"]["message"] for r in got if r["status"] == "error"] == [
        "ValueError: seed must not be negative, got -1", "ValueError: seed must not be negative, got -7",
    ]  # fmt: skip
    assert all(sorted(r["executors"]) == sorted([peer_id(a), peer_id(b)]) for r in got)
    local = meshnode("exec", str(script), *flags, "--data-dir", str(tmp_path / "x"), timeout=JOB)
    assert local.returncode == 1 and without_executors(local.stdout) == without_executors(submitted.stdout)
