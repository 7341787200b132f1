"""Python jobs on a mesh of node processes: verified by distinct peers, lines as exec gives them,
and a node whose Python runtime is not ready never takes Python work."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import PreparedPython

from ..waiting import JOB, MEET
from .nodes import NodeProcess, meshnode, nodes, poll, peers_json  # noqa: F401  (nodes is a fixture)
from .test_node_cli import LOOPBACK

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "blackbody.py")
STARS = str(ROOT / "examples" / "stars.csv")


def without_executors(text: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("executors", "verified_by")} for line in text.splitlines()]


def mesh(tmp_path: Path, nodes: list[NodeProcess], count: int, env: dict[str, str] | None = None) -> list[NodeProcess]:
    started: list[NodeProcess] = []
    for i in range(count):
        boot = ["--bootstrap", started[0].dial_addr()] if started else []
        node = NodeProcess(tmp_path / f"n{i}", [*LOOPBACK, *boot], env=env if i else None)
        nodes.append(node)
        node.wait_ready()
        started.append(node)
    poll(lambda: all(len([p for p in peers_json(n.data_dir) if p["state"] == "alive"]) == count - 1 for n in started),
         MEET, "the mesh to meet")  # fmt: skip
    return started


def test_a_python_job_on_three_nodes_is_verified_twice_and_matches_exec(
    python_runtime: PreparedPython, tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    a, b, c = mesh(tmp_path, nodes, 3)
    ids = {json.loads((n.data_dir / "api.json").read_text())["peer_id"] for n in (a, b, c)}
    assert all(p["runtimes"][0] == "wasm" and len(p["runtimes"]) == 2 for p in peers_json(a.data_dir))

    out = tmp_path / "results.jsonl"
    flags = ["--input-csv", STARS, "--rows-per-subtask", "3"]
    submitted = meshnode("submit", EXAMPLE, *flags, "--output", str(out), "--data-dir", str(a.data_dir), timeout=JOB)
    assert submitted.returncode == 0, submitted.stderr + a.stderr + b.stderr + c.stderr
    assert "7 subtasks of 3 rows (20 rows)" in submitted.stderr
    local = meshnode("exec", EXAMPLE, *flags, "--data-dir", str(tmp_path / "x"), timeout=JOB)
    assert local.returncode == 0, local.stderr
    assert without_executors(out.read_text()) == without_executors(local.stdout)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(20))
    assert all(len(set(r["executors"])) == 2 and set(r["executors"]) <= ids for r in records)
    job_id = json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout)[0]["job_id"]
    assert meshnode("results", job_id, "--data-dir", str(a.data_dir)).stdout == out.read_text()


def test_a_node_without_the_python_runtime_never_takes_python_work(
    python_runtime: PreparedPython, tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    unprepared = {**os.environ, "MESHNODE_CACHE_DIR": str(tmp_path / "empty-cache")}
    a, b = mesh(tmp_path, nodes, 2, env=unprepared)
    assert [p["runtimes"] for p in peers_json(a.data_dir)] == [["wasm"]]
    script = tmp_path / "square.py"
    script.write_text("def main(row):\n    return row * row\n")
    alone = meshnode("submit", str(script), "--range", "40", "--rows-per-subtask", "1", "--replicas", "1",
                     "--quorum", "1", "--data-dir", str(a.data_dir), timeout=JOB)  # fmt: skip
    assert alone.returncode == 0, alone.stderr + a.stderr + b.stderr
    a_id = json.loads((a.data_dir / "api.json").read_text())["peer_id"]
    records = [json.loads(line) for line in alone.stdout.splitlines()]
    assert [r["output"] for r in records] == [i * i for i in range(40)]
    assert all(r["executors"] == [a_id] for r in records)  # the idle peer, which cannot run it, took none
    assert not (tmp_path / "empty-cache" / "python").exists()  # and was not made to compile


def test_submit_refuses_a_script_that_cannot_run_with_its_line(
    python_runtime: PreparedPython, tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    (a,) = mesh(tmp_path, nodes, 1)
    script = tmp_path / "broken.py"
    script.write_text("def main(row):\n    return row +\n")
    done = meshnode("submit", str(script), "--range", "3", "--data-dir", str(a.data_dir), timeout=JOB)
    assert done.returncode == 2 and done.stdout == ""
    assert "broken.py, line 2: SyntaxError: invalid syntax" in done.stderr.strip().splitlines()[-1]
    assert json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout) == []
