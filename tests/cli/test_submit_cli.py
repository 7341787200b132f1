"""``submit`` as a user runs it: two node processes, a job verified by both, results as exec gives them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshnode.core.owner import DEFAULT_MAX_OPEN
from tests.sandbox import modules as m

from ..waiting import JOB
from .nodes import NodeProcess, meshnode, nodes, pair  # noqa: F401  (nodes is a fixture)
from .test_node_cli import LOOPBACK

ROOT = Path(__file__).resolve().parents[2]
MODULE = str(ROOT / "tasks_wasm" / "mandelbrot.wasm")
TILES = str(ROOT / "examples" / "mandelbrot_tiles.jsonl")


def without_executors(text: str) -> list[dict[str, object]]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("executors", "verified_by")} for line in text.splitlines()]


def test_submit_is_verified_by_two_nodes_and_matches_exec(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a, a_info, b, b_info = pair(tmp_path, nodes)

    out = tmp_path / "results.jsonl"
    submitted = meshnode("submit", MODULE, "--input-jsonl", TILES, "--replicas", "2", "--output", str(out),
                         "--data-dir", str(a.data_dir), timeout=JOB)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + a.stderr + b.stderr
    local = meshnode("exec", MODULE, "--input-jsonl", TILES, "--data-dir", str(tmp_path / "x"))
    assert without_executors(out.read_text()) == without_executors(local.stdout)
    for line in out.read_text().splitlines():
        record = json.loads(line)
        assert sorted(record["executors"]) == sorted([a_info["peer_id"], b_info["peer_id"]])
        assert record["verified_by"] == "quorum"

    job_id = json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout)[0]["job_id"]
    again = meshnode("results", job_id, "--data-dir", str(a.data_dir))
    assert again.returncode == 0 and again.stdout == out.read_text()
    status = meshnode("status", job_id, "--data-dir", str(a.data_dir)).stdout
    assert "finished" in status

    # the job summary: each node ran all 16 tiles (replicas 2), the other node's results came in
    cost = json.loads(meshnode("status", job_id, "--json", "--data-dir", str(a.data_dir)).stdout)["cost"]
    assert cost["runs_per_peer"] == {a_info["peer_id"]: 16, b_info["peer_id"]: 16}
    assert cost["fuel"] > 0 and cost["sandbox_cpu_s"] > 0 and 0 < cost["wall_s"] < JOB
    assert cost["input_bytes_sent"] > 0 and cost["output_bytes_received"] > 0
    assert cost["disputed"] == 0 and cost["replicas_added"] == 0
    for shown in (submitted.stderr, status):
        assert f"{a_info['peer_id'][-8:]} 16, " in shown or f"{b_info['peer_id'][-8:]} 16, " in shown
        assert "cost: " in shown and "moved: " in shown and "retries: " in shown


def test_a_job_needing_more_peers_than_the_mesh_has_says_so(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a.wait_ready()
    detached = meshnode("submit", MODULE, "--input-jsonl", TILES, "--detach", "--data-dir", str(a.data_dir))
    assert detached.returncode == 0 and len(detached.stdout.strip()) == 32
    status = json.loads(meshnode("status", detached.stdout.strip(), "--json", "--data-dir", str(a.data_dir)).stdout)
    assert status["state"] == "running" and status["waiting_for_peers"] == {"have": 0, "need": 1}
    alone = meshnode("submit", MODULE, "--input-jsonl", TILES, "--replicas", "1", "--quorum", "1", "--data-dir", str(a.data_dir))
    assert alone.returncode == 0, alone.stderr
    assert len(alone.stdout.splitlines()) == 16


def test_submit_without_a_node_or_with_a_bad_module(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    none = meshnode("submit", MODULE, "--range", "2", "--data-dir", str(tmp_path / "nobody"))
    assert none.returncode == 2 and "start one with" in none.stderr
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a.wait_ready()
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\x00asm nope")
    bad = meshnode("submit", str(junk), "--range", "2", "--data-dir", str(a.data_dir))
    assert bad.returncode == 2 and "the module cannot run" in bad.stderr


def test_submit_refuses_a_module_whose_entry_has_the_wrong_type(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a.wait_ready()
    module = tmp_path / "wrong_entry.wasm"
    module.write_bytes(m.WRONG_ENTRY_TYPE)  # exports run as (i32) -> i32
    refused = meshnode("submit", str(module), "--range", "2", "--data-dir", str(a.data_dir))
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "the module cannot run" in refused.stderr and "no entry function 'run'" in refused.stderr
    assert json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout) == []


@pytest.mark.slow  # about 10 s: the node runs 32,769 subtasks
def test_a_job_of_more_inputs_than_its_window_streams_in_and_its_results_stream_out_in_order(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a.wait_ready()
    echo = tmp_path / "echo.wasm"
    echo.write_bytes(m.ECHO)
    out = tmp_path / "results.jsonl"
    n = 2 * DEFAULT_MAX_OPEN + 1  # the window of open subtasks slides twice over
    submitted = meshnode(
        "submit", str(echo), "--range", str(n), "--replicas", "1", "--quorum", "1", "--output", str(out),
        "--data-dir", str(a.data_dir), timeout=600,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + a.stderr
    assert f": {n} subtasks, 1 replicas, quorum 1" in submitted.stderr
    job_id = submitted.stderr.split()[1].rstrip(":")
    status = json.loads(meshnode("status", job_id, "--json", "--data-dir", str(a.data_dir)).stdout)
    assert (status["state"], status["total"], status["verified"]) == ("finished", n, n)

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(n))
    assert all(r["status"] == "ok" and r["output"] == r["index"] for r in records)  # echo: "17" is JSON 17
    again = meshnode("results", job_id, "--data-dir", str(a.data_dir), timeout=120)
    assert again.returncode == 0 and again.stdout == out.read_text()


def test_an_input_file_that_breaks_mid_upload_creates_no_job(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a.wait_ready()
    echo = tmp_path / "echo.wasm"
    echo.write_bytes(m.ECHO)
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n" + "1,2\n" * 20_000 + "3\n")
    broken = meshnode("submit", str(echo), "--input-csv", str(rows), "--replicas", "1", "--quorum", "1", "--data-dir", str(a.data_dir))
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == [
        f"meshnode submit: {rows}, line 20002: 1 fields where the header has 2"
    ]
    assert json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout) == []
    assert "Traceback" not in a.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    nothing = meshnode("submit", str(echo), "--input-jsonl", str(empty), "--data-dir", str(a.data_dir))
    assert nothing.returncode == 2 and "the job has no inputs" in nothing.stderr
