"""Cancelling a job as a user does: ``meshnode cancel`` and Ctrl-C on ``submit``, with three real node processes.

Each node reports what it ran of each job (``jobs_run`` in ``GET /v1/node``:
chunks, and when the last one started and ended, taken around the sandbox's
runs), so "no node runs the job any more" is read from the nodes themselves.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .nodes import NodeProcess, api_get, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)
from .test_crash_jobs import start_mesh
from .test_submit_cli import MODULE

pytestmark = pytest.mark.slow  # three node processes and a job of several seconds


def write_tiles(path: Path, count: int) -> str:
    """Tiles of about 0.3 s each, every one a different input."""
    lines = [json.dumps({"x0": 0, "y0": 0, "w": 96, "h": 96, "width": 96, "height": 96, "max_iter": 60_000 + i})
             for i in range(count)]  # fmt: skip
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def ran(node: NodeProcess, job_id: str) -> dict[str, Any] | None:
    runs: dict[str, Any] = api_get(node.data_dir, "/v1/node")["jobs_run"]
    return runs.get(job_id)


def stops_everywhere(mesh: list[NodeProcess], job_id: str, cancelled_at: float) -> None:
    """No node starts a chunk of the job 2 s after the cancel, the chunks under way end, and nothing starts after.

    A chunk already running when its node hears of the cancel runs to its end (a run
    cannot be stopped half way; the job's time limit bounds it): on a loaded machine
    a tile takes several times its 0.3 s, so the end is reported, and the start checked.
    """
    for node in mesh:
        poll(lambda: (ran(node, job_id) or {"running": 0})["running"] == 0, 30, "the chunks under way to end")
        last = ran(node, job_id)
        if last is not None:
            print(f"\n[cancel] {node.data_dir.name}: last chunk started {last['last_started'] - cancelled_at:+.2f} s, "
                  f"ended {last['last_ended'] - cancelled_at:+.2f} s after the cancel")  # fmt: skip
            assert last["last_started"] <= cancelled_at + 2.0, f"{node.data_dir.name} started a chunk of it after the cancel"
    before = [ran(node, job_id) for node in mesh]
    time.sleep(1.0)  # a window in which nothing may start: the thieves had stock queued
    assert [ran(node, job_id) for node in mesh] == before


def everyone_runs(mesh: list[NodeProcess], job_id: str) -> bool:
    return all(ran(node, job_id) for node in mesh)


def test_meshnode_cancel_stops_a_job_on_every_node(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    tiles = write_tiles(tmp_path / "tiles.jsonl", 60)
    mesh, _ = start_mesh(tmp_path, nodes)
    a = mesh[0]
    detached = meshnode("submit", MODULE, "--input-jsonl", tiles, "--detach", "--data-dir", str(a.data_dir))
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    poll(lambda: everyone_runs(mesh, job_id), 60, "every node to run the job")

    cancelled = meshnode("cancel", job_id, "--data-dir", str(a.data_dir))
    cancelled_at = time.time()  # the owner cancelled the job before it answered
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled across the mesh" in cancelled.stdout
    stops_everywhere(mesh, job_id, cancelled_at)
    status = json.loads(meshnode("status", job_id, "--json", "--data-dir", str(a.data_dir)).stdout)
    assert status["state"] == "cancelled" and status["verified"] < 60
    results = meshnode("results", job_id, "--data-dir", str(a.data_dir))
    assert results.returncode == 0 and len(results.stdout.splitlines()) == status["verified"]
    again = meshnode("cancel", job_id, "--data-dir", str(a.data_dir))  # nothing more to stop; still an answer
    assert again.returncode == 0 and "cancelled across the mesh" in again.stdout
    missing = meshnode("cancel", "0" * 32, "--data-dir", str(a.data_dir))
    assert missing.returncode == 2 and "no job" in missing.stderr


def at_a_terminal() -> None:
    """In the child: Ctrl-C as a terminal delivers it, whatever this process inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_submit_cancels_the_job_across_the_mesh(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    tiles = write_tiles(tmp_path / "tiles.jsonl", 60)
    mesh, _ = start_mesh(tmp_path, nodes)
    a = mesh[0]
    submit = subprocess.Popen(
        [sys.executable, "-m", "meshnode", "submit", MODULE, "--input-jsonl", tiles, "--data-dir", str(a.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=at_a_terminal,  # a suite started in the background passes SIGINT on ignored
    )  # fmt: skip
    try:
        poll(lambda: len(api_get(a.data_dir, "/v1/jobs")["jobs"]) == 1, 30, "the job to be submitted")
        job_id = api_get(a.data_dir, "/v1/jobs")["jobs"][0]["job_id"]
        poll(lambda: everyone_runs(mesh, job_id), 60, "every node to run the job")
        interrupted_at = time.time()
        submit.send_signal(signal.SIGINT)
        poll(lambda: api_get(a.data_dir, f"/v1/jobs/{job_id}")["state"] == "cancelled", 10, "the job to be cancelled")
        cancelled_at = time.time()
        print(f"\n[cancel] Ctrl-C reached the owner as a cancel within {cancelled_at - interrupted_at:.2f} s")
        out, err = submit.communicate(timeout=30)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()
    assert submit.returncode == 130, err
    assert f"job {job_id} cancelled across the mesh" in err and "Traceback" not in err
    stops_everywhere(mesh, job_id, cancelled_at)
    assert api_get(a.data_dir, f"/v1/jobs/{job_id}")["state"] == "cancelled"
