"""``submit`` as a user runs it: two node processes, a job verified by both, results as exec gives them."""

from __future__ import annotations

import json
from pathlib import Path

from ..waiting import JOB, MEET
from .nodes import NodeProcess, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)
from .test_node_cli import LOOPBACK

ROOT = Path(__file__).resolve().parents[2]
MODULE = str(ROOT / "tasks_wasm" / "mandelbrot.wasm")
TILES = str(ROOT / "examples" / "mandelbrot_tiles.jsonl")


def without_executors(text: str) -> list[dict[str, object]]:
    return [{k: v for k, v in json.loads(line).items() if k != "executors"} for line in text.splitlines()]


def test_submit_is_verified_by_two_nodes_and_matches_exec(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a_info = a.wait_ready()
    b = NodeProcess(tmp_path / "b", [*LOOPBACK, "--bootstrap", a.dial_addr()])
    nodes.append(b)
    b_info = b.wait_ready()
    poll(lambda: "alive" in meshnode("peers", "--data-dir", str(a.data_dir)).stdout, MEET, "the two nodes to meet")

    out = tmp_path / "results.jsonl"
    submitted = meshnode("submit", MODULE, "--input-jsonl", TILES, "--output", str(out), "--data-dir", str(a.data_dir), timeout=JOB)
    assert submitted.returncode == 0, submitted.stderr + a.stderr + b.stderr
    local = meshnode("exec", MODULE, "--input-jsonl", TILES, "--data-dir", str(tmp_path / "x"))
    assert without_executors(out.read_text()) == without_executors(local.stdout)
    for line in out.read_text().splitlines():
        assert sorted(json.loads(line)["executors"]) == sorted([a_info["peer_id"], b_info["peer_id"]])

    job_id = json.loads(meshnode("jobs", "--json", "--data-dir", str(a.data_dir)).stdout)[0]["job_id"]
    again = meshnode("results", job_id, "--data-dir", str(a.data_dir))
    assert again.returncode == 0 and again.stdout == out.read_text()
    assert "finished" in meshnode("status", job_id, "--data-dir", str(a.data_dir)).stdout


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
