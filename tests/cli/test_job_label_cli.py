"""A job's label outlives the node that ran it: ``jobs`` shows it after a restart, read from the journal."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from .nodes import NodeProcess, api_get, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)
from .test_node_cli import LOOPBACK
from .test_submit_cli import MODULE, TILES

LABEL = "tiles, first try"


def test_a_finished_jobs_label_survives_a_node_restart(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    node = NodeProcess(tmp_path / "n", LOOPBACK)
    nodes.append(node)
    node.wait_ready()
    data_dir = str(node.data_dir)
    submitted = meshnode("submit", MODULE, "--input-jsonl", TILES, "--replicas", "1", "--quorum", "1",
                         "--label", LABEL, "--detach", "--data-dir", data_dir)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    poll(lambda: api_get(node.data_dir, f"/v1/jobs/{job_id}")["state"] == "finished", 120, "the job to finish")
    assert node.stop(signal.SIGTERM) < 10

    again = NodeProcess(node.data_dir, LOOPBACK, log_name="n-again")
    nodes.append(again)
    again.wait_ready()
    listed = meshnode("jobs", "--data-dir", data_dir)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if line.startswith(job_id)]
    assert line.split()[1] == "finished" and line.endswith(f"  {LABEL}"), listed.stdout
    (job,) = json.loads(meshnode("jobs", "--json", "--data-dir", data_dir).stdout)
    assert job["label"] == LABEL
