"""A node whose disk fills up mid-job: it pauses the job, says why in one line, loses nothing, and resumes by itself.

The data dir is on a real tmpfs of a few tens of MiB, most of it taken by a
filler file, so the journal runs out of space part-way through a job of 100
outputs of 100 KB. Deleting the filler gives the space back, as a user would.
Needs root (to mount the tmpfs); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tasks import reference

from .nodes import NodeProcess, api_get, meshnode, nodes, poll  # noqa: F401 - nodes is a fixture

pytestmark = pytest.mark.slow

MODULE = str(Path(__file__).resolve().parents[2] / "tasks_wasm" / "mandelbrot.wasm")
NODE_ARGS = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--slots", "1"]
DISK_MIB = 48
FILLER_MIB = 42  # leaves about 6 MiB: room for the node and about half the job's 10 MB of outputs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def tiles(path: Path, count: int) -> list[bytes]:
    """``count`` mandelbrot tiles of 320x320 pixels: 100 KB of output each, every one different."""
    lines = [
        json.dumps({"x0": 0, "y0": 320 * i, "w": 320, "h": 320, "width": 320, "height": 320 * count, "max_iter": 64})
        for i in range(count)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return [line.encode() for line in lines]


def journalled(data_dir: Path, job_id: str) -> int:
    """Verdicts the journal holds, read by another process as any reader would."""
    with sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True, timeout=10) as db:
        n = int(db.execute("SELECT COUNT(*) FROM outputs WHERE job_id = ?", (bytes.fromhex(job_id),)).fetchone()[0])
    db.close()
    return n


def test_a_full_disk_pauses_the_job_and_it_resumes_with_nothing_lost_once_space_returns(
    tmp_path: Path, small_disk: Path, nodes: list[NodeProcess]
) -> None:
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (FILLER_MIB << 20))
    data_dir = small_disk / "node"
    inputs = tiles(tmp_path / "tiles.jsonl", 100)
    node = NodeProcess(data_dir, NODE_ARGS, log_name="node")
    nodes.append(node)
    node.wait_ready()

    submitted = meshnode("submit", MODULE, "--input-jsonl", str(tmp_path / "tiles.jsonl"), "--replicas", "1",
                         "--quorum", "1", "--detach", "--data-dir", str(data_dir))  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    def paused() -> bool:
        status = api_get(data_dir, f"/v1/jobs/{job_id}")
        # never a verdict the journal does not hold: what status counts, the journal has
        assert status["verified"] <= journalled(data_dir, job_id)
        return "paused" in status["problem"]

    poll(paused, 120, "the job to pause on the full disk")
    status = api_get(data_dir, f"/v1/jobs/{job_id}")
    assert "disk is full" in status["problem"] and 0 < status["verified"] < 100
    assert api_get(data_dir, "/v1/node")["journal"]["ok"] is False
    refused = meshnode("submit", MODULE, "--input-jsonl", str(tmp_path / "tiles.jsonl"), "--replicas", "1",
                       "--quorum", "1", "--detach", "--data-dir", str(data_dir))  # fmt: skip
    assert refused.returncode == 2 and "full" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    filler.unlink()  # the space comes back; nobody restarts anything

    def finished() -> bool:
        return bool(api_get(data_dir, f"/v1/jobs/{job_id}")["state"] == "finished")

    poll(finished, 120, "the job to resume and finish by itself")
    results = meshnode("results", job_id, "--data-dir", str(data_dir))
    assert results.returncode == 0, results.stderr
    lines = [json.loads(line) for line in results.stdout.splitlines()]
    expected = [reference.mandelbrot(data) for data in inputs]
    assert [r["index"] for r in lines] == list(range(100))
    assert all(r["status"] == "ok" for r in lines)
    import base64

    assert [base64.b64decode(r["output"]["base64"]) for r in lines] == expected
    assert api_get(data_dir, "/v1/node")["journal"]["ok"] is True
    log = node.stderr
    assert "Traceback" not in log and "paused" in log and "resumed" in log
