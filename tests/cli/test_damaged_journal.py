"""A damaged journal, met by a real node process: one clear line and no traceback, or the one bad job set aside.

The journals are written by the node's own code (``JobManager.create``), then
damaged as a disk, a crash or a person would damage them: truncated, a page
overwritten, one job's row garbled, a reputation row garbled, emptied, or
written by a newer version.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import cbor2
import pytest

from meshnode.config import TrustPolicy
from meshnode.core.manifest import Replication, TaskLimits
from meshnode.core.manifest import JobOptions
from meshnode.core.reputation import Reputation
from meshnode.node.executing import Executor
from meshnode.node.owning import JobManager
from meshnode.sandbox.runtime import Sandbox
from meshnode.storage.blobs import BlobStore
from meshnode.storage.identity import load_or_create_identity
from meshnode.storage.journal import Store
from tests.cli.nodes import NodeProcess, api_get, meshnode, nodes, poll  # noqa: F401 - nodes is a fixture

TASK = Path(__file__).resolve().parents[2] / "tasks_wasm" / "monte_carlo_pi.wasm"
ALONE = JobOptions(limits=TaskLimits(10**9, 16 << 20, 10_000, 1 << 20), replication=Replication(1, 1, 1))
NODE_ARGS = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--slots", "1"]


def journal_with_jobs(data_dir: Path, jobs: int = 2, inputs: int = 400) -> list[bytes]:
    """Journal ``jobs`` unstarted jobs with the node's own code, as a node that stopped at once would leave them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(data_dir)
    blobs = BlobStore(data_dir / "blobs")
    ids = []
    with Store.open(data_dir / "node.db") as store, Sandbox() as sandbox:
        manager = JobManager(identity, blobs, store, Executor(identity, sandbox, blobs, store, TrustPolicy()), Reputation())
        for j in range(jobs):
            data = (json.dumps({"seed": j * inputs + i, "samples": 200}).encode() for i in range(inputs))
            ids.append(manager.create(TASK.read_bytes(), data, ALONE, now_ms=int(time.time() * 1000)).job_id)
        store.save_state("reputation", Reputation().to_dict())
    return ids


def start_fails(data_dir: Path) -> str:
    """Start a node that must refuse to start: its whole stderr, checked to be one line."""
    result = meshnode("--data-dir", str(data_dir), *NODE_ARGS, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(data_dir / "node.db") in lines[0]
    return lines[0]


def test_a_truncated_journal_stops_the_node_with_one_line(tmp_path: Path) -> None:
    journal_with_jobs(tmp_path / "n")
    path = tmp_path / "n" / "node.db"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    line = start_fails(tmp_path / "n")
    assert "damaged" in line and "mv " in line


def test_a_garbage_page_stops_the_node_with_one_line(tmp_path: Path) -> None:
    journal_with_jobs(tmp_path / "n")
    path = tmp_path / "n" / "node.db"
    with sqlite3.connect(path) as db:  # a page of the inputs, which a restarted node reads (dbstat: where each table lies)
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name = 'inputs' ORDER BY pageno")]
    db.close()
    with open(path, "r+b") as f:
        f.seek((pages[len(pages) // 2] - 1) * page_size)
        f.write(os.urandom(page_size))
    line = start_fails(tmp_path / "n")
    assert "damaged" in line


def test_a_journal_from_a_newer_meshnode_is_refused_by_name(tmp_path: Path) -> None:
    journal_with_jobs(tmp_path / "n", jobs=1, inputs=5)
    with sqlite3.connect(tmp_path / "n" / "node.db") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.close()
    assert "written by a newer meshnode (schema 99" in start_fails(tmp_path / "n")


def test_an_emptied_journal_beside_the_blobs_of_earlier_jobs_is_reported_not_reset(tmp_path: Path) -> None:
    journal_with_jobs(tmp_path / "n", jobs=1, inputs=5)
    for name in ("node.db-wal", "node.db-shm"):
        (tmp_path / "n" / name).unlink(missing_ok=True)
    (tmp_path / "n" / "node.db").write_bytes(b"")
    line = start_fails(tmp_path / "n")
    assert "is empty" in line and "blobs" in line
    assert (tmp_path / "n" / "node.db").stat().st_size == 0  # nothing was written over it


def test_one_damaged_job_is_set_aside_and_the_node_runs_the_others(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    good, bad = journal_with_jobs(tmp_path / "n", jobs=2, inputs=50)
    with sqlite3.connect(tmp_path / "n" / "node.db") as db:
        db.execute("UPDATE jobs SET snapshot = ? WHERE job_id = ?", (b"\xff\x00garbage", bad))
        db.execute("UPDATE node_state SET value = ? WHERE name = 'reputation'", (cbor2.dumps([1, 2]),))
    db.close()
    node = NodeProcess(tmp_path / "n", NODE_ARGS)
    nodes.append(node)
    node.wait_ready()

    def good_finished() -> bool:
        return bool(api_get(tmp_path / "n", f"/v1/jobs/{good.hex()}")["state"] == "finished")

    poll(good_finished, 120, "the undamaged job to finish")
    status = api_get(tmp_path / "n", f"/v1/jobs/{bad.hex()}")
    assert status["state"] == "damaged" and "submit it again" in status["problem"]
    listed = meshnode("jobs", "--data-dir", str(tmp_path / "n"))
    assert listed.returncode == 0 and f"{bad.hex()}  damaged" in listed.stdout and "unreadable" in listed.stdout
    results = meshnode("results", good.hex(), "--data-dir", str(tmp_path / "n"))
    assert results.returncode == 0 and len(results.stdout.splitlines()) == 50
    log = node.stderr
    assert "Traceback" not in log
    assert f"job {bad.hex()} is damaged and left alone" in log
    assert "starting with empty peer reputations" in log


@pytest.mark.parametrize("cut", [0, 100, 4096])
def test_a_journal_cut_short_at_any_point_never_gives_a_traceback(tmp_path: Path, cut: int) -> None:
    journal_with_jobs(tmp_path / "n", jobs=1, inputs=5)
    for name in ("node.db-wal", "node.db-shm"):
        (tmp_path / "n" / name).unlink(missing_ok=True)
    with open(tmp_path / "n" / "node.db", "r+b") as f:
        f.truncate(cut)
    start_fails(tmp_path / "n")
