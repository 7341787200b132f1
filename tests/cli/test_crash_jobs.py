"""Crashes mid-job with real node processes (SIGKILL): a worker, then the owner; no work is lost.

Each subtask is one mandelbrot tile of 96x96 pixels with a large ``max_iter``
(about 0.15 s on one core, and every tile a different input), so that a job of
a few dozen tiles runs for several seconds and a kill lands while it runs.
Every node has one slot, so that three nodes fit on a CI machine with two cores.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..waiting import JOB, MEET, STEP
from .nodes import NodeProcess, api_get, free_tcp_port, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)
from .test_node_cli import LOOPBACK
from .test_submit_cli import MODULE, without_executors

MAX_ITER = 30_000  # about 0.15 s a tile on one core


def loopback(port: int = 0) -> list[str]:
    """LOOPBACK with the node listening on ``port`` (0: any free port), one slot."""
    assert "/ip4/127.0.0.1/tcp/0" in LOOPBACK
    return [f"/ip4/127.0.0.1/tcp/{port}" if a == "/ip4/127.0.0.1/tcp/0" else a for a in LOOPBACK] + ["--slots", "1"]


def write_tiles(path: Path, count: int) -> str:
    """``count`` tiles, each the whole 96x96 image with its own ``max_iter`` (so no two inputs are the same)."""
    lines = [
        json.dumps({"x0": 0, "y0": 0, "w": 96, "h": 96, "width": 96, "height": 96, "max_iter": MAX_ITER + i})
        for i in range(count)
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def exec_lines(tiles: str, tmp_path: Path) -> list[dict[str, object]]:
    local = meshnode("exec", MODULE, "--input-jsonl", tiles, "--data-dir", str(tmp_path / "exec"), timeout=JOB)
    assert local.returncode == 0, local.stderr
    return without_executors(local.stdout)


def start_mesh(tmp_path: Path, nodes: list[NodeProcess], a_port: int = 0) -> tuple[list[NodeProcess], list[str]]:
    """Owner a and workers b and c (bootstrapped to a), once a sees both; the nodes and their peer IDs."""
    a = NodeProcess(tmp_path / "a", loopback(a_port))
    nodes.append(a)
    a.wait_ready()
    mesh = [a]
    for name in ("b", "c"):  # both start at once
        mesh.append(NodeProcess(tmp_path / name, [*loopback(), "--bootstrap", a.dial_addr()]))
        nodes.append(mesh[-1])
    ids = [node.wait_ready()["peer_id"] for node in mesh]

    def a_sees_both() -> bool:
        alive = {p["peer_id"] for p in api_get(a.data_dir, "/v1/peers")["peers"] if p["state"] == "alive"}
        return alive == set(ids[1:])

    poll(a_sees_both, MEET, "a to see b and c")
    return mesh, ids


def decided(status: dict[str, Any]) -> int:
    return int(status["verified"] + status["failed"] + status["disputed"])


def logs(*mesh: NodeProcess) -> str:
    """Each node's log, then what the running ones say of their peers and jobs (why a job stalls)."""
    return "".join(f"\n--- {n.stderr_path.name}\n{n.stderr}" for n in mesh) + "".join(
        f"\n--- {n.stderr_path.name[:-7]} now: {state_of(n)}" for n in mesh if n.proc.poll() is None
    )


def state_of(node: NodeProcess) -> str:
    try:
        info = api_get(node.data_dir, "/v1/node")
        shown = ("peer_id", "state", "connected", "gossip_heard_s", "surplus", "idle")
        peers = [{k: p[k] for k in shown} | {"score": p["reputation"]["score"]} for p in api_get(node.data_dir, "/v1/peers")["peers"]]
        jobs = [
            {k: j.get(k) for k in ("job_id", "state", "verified", "running", "queued", "peers_working", "waiting_for_peers")}
            for j in api_get(node.data_dir, "/v1/jobs")["jobs"]
        ]  # fmt: skip
    except Exception as exc:  # one that does not answer says something too
        return repr(exc)
    mine = {k: info[k] for k in ("idle", "stolen_held", "lease_renewals_failed", "dropped_messages", "refused_work")}
    return json.dumps({"node": mine, "peers": peers, "jobs": jobs})


def test_a_worker_killed_mid_job_loses_no_work(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    tiles = write_tiles(tmp_path / "tiles.jsonl", 32)
    expected = exec_lines(tiles, tmp_path)
    (a, b, c), (_, b_id, _) = start_mesh(tmp_path, nodes)

    out = tmp_path / "results.jsonl"
    with open(tmp_path / "submit.stderr", "wb") as submit_stderr:
        submit = subprocess.Popen(
            [sys.executable, "-m", "meshnode", "submit", MODULE, "--input-jsonl", tiles, "--replicas", "2", "--output",
             str(out), "--data-dir", str(a.data_dir)],
            stdout=subprocess.DEVNULL, stderr=submit_stderr,
        )  # fmt: skip
        try:
            poll(lambda: len(api_get(a.data_dir, "/v1/jobs")["jobs"]) == 1, STEP, "the job to start")
            job_id = api_get(a.data_dir, "/v1/jobs")["jobs"][0]["job_id"]

            def b_is_mid_job() -> bool:
                status = api_get(a.data_dir, f"/v1/jobs/{job_id}")
                if status["state"] != "running":
                    raise AssertionError(f"the job ended before b could be killed mid-job: {status}{logs(a, b, c)}")
                results = api_get(a.data_dir, f"/v1/jobs/{job_id}/results")["results"]
                ran_one = any(b_id in r["executors"] for r in results)
                return ran_one and api_get(b.data_dir, "/v1/node")["idle"] == 0  # b verified one and runs more

            poll(b_is_mid_job, JOB, "b to have run a subtask and to be running more")
            b.proc.kill()  # SIGKILL: no goodbye, no outbox flush, its leases just stop being renewed
            b.proc.wait()
            at_kill = api_get(a.data_dir, f"/v1/jobs/{job_id}")
            assert at_kill["state"] == "running" and decided(at_kill) < at_kill["total"], at_kill

            submit.wait(timeout=JOB)
        finally:
            if submit.poll() is None:
                submit.kill()
                submit.wait()
    why = (tmp_path / "submit.stderr").read_text() + logs(a, b, c)
    assert submit.returncode == 0, why
    lines = out.read_text().splitlines()
    assert without_executors(out.read_text()) == expected, why
    for line in lines:
        executors = json.loads(line)["executors"]
        assert len(executors) == 2 and len(set(executors)) == 2, line
    # b held replicas when it died: the owner took them back once it timed b out, and others ran them
    assert f"peer left    {b_id}  (timed out)" in a.stderr, why
    assert re.search(rf"{b_id} lost replica \d+\.\d+ \(peer gone\)", a.stderr), why


# Killed twice in a row (the second crash finds the first one's recovery half done), stopped cleanly, killed after that.
SIGNALS = (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)


@pytest.mark.slow  # 40-70 s: three nodes, a job of about 10 s, four restarts
def test_an_owner_stopped_four_times_mid_job_resumes_it_each_time_and_loses_nothing(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    tiles = write_tiles(tmp_path / "tiles.jsonl", 80)
    expected = exec_lines(tiles, tmp_path)
    port = free_tcp_port()  # the owner comes back on the same port, where b and c dial it again
    (a, b, c), _ = start_mesh(tmp_path, nodes, a_port=port)

    detached = meshnode("submit", MODULE, "--input-jsonl", tiles, "--detach", "--data-dir", str(a.data_dir))
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    total = len(expected)
    owners = [a]
    verified_before: dict[int, dict[str, Any]] = {}
    counts: list[int] = []

    for round_, sig in enumerate(SIGNALS, start=1):
        owner = owners[-1]
        seen: list[int] = []

        def just_verified_more() -> bool:
            status = api_get(owner.data_dir, f"/v1/jobs/{job_id}")
            if status["state"] != "running":
                raise AssertionError(f"the job ended before the owner could be stopped: {status}{logs(*owners, b, c)}")
            seen.append(status["verified"])
            counts.append(decided(status))
            # right after a verdict, past this round's share of the job: the snapshot is older than that
            # verdict, and the verdict must come back from the journal
            return len(seen) > 1 and seen[-2] < seen[-1] and seen[-1] >= round_ * total // (len(SIGNALS) + 1)

        poll(just_verified_more, JOB, f"{round_} fifth(s) of the subtasks to be verified")
        # what the owner has decided, read just before it is stopped: all of it must survive
        verified_before.update(
            (r["index"], r) for r in api_get(owner.data_dir, f"/v1/jobs/{job_id}/results")["results"]
        )
        owner.proc.send_signal(sig)
        owner.proc.wait(30)
        # b and c dial the old address again, with a growing backoff; the owner dials them too, so the mesh meets at once
        again = NodeProcess(a.data_dir, [*loopback(port), "--bootstrap", b.dial_addr(), "--bootstrap", c.dial_addr()],
                            log_name=f"a-restart-{round_}")  # fmt: skip
        nodes.append(again)
        owners.append(again)
        again.wait_ready()
        resumed = re.search(rf"resumed job\s+{job_id}\s+\((\d+) of (\d+) subtasks decided\)", again.stderr)
        assert resumed is not None, logs(*owners)
        assert int(resumed[2]) == total
        assert int(resumed[1]) >= len(verified_before), (
            f"round {round_}: resumed with {resumed[1]} of {total} decided, but {len(verified_before)} were "
            f"decided before the owner stopped{logs(*owners)}"
        )
        counts.append(int(resumed[1]))

    last = owners[-1]

    def finished() -> bool:
        status = api_get(last.data_dir, f"/v1/jobs/{job_id}")
        counts.append(decided(status))
        return bool(status["state"] == "finished")

    poll(finished, JOB, "the resumed job to finish", report=lambda: logs(*owners, b, c))
    why = logs(*owners, b, c)
    status = json.loads(meshnode("status", job_id, "--json", "--data-dir", str(last.data_dir)).stdout)
    assert (status["state"], status["verified"]) == ("finished", total), status
    result = meshnode("results", job_id, "--data-dir", str(last.data_dir))
    assert result.returncode == 0, result.stderr + why
    assert without_executors(result.stdout) == expected, why

    # Nothing decided before a stop was lost or decided again: each restarted owner knew every verdict,
    # the count of decided subtasks never went down, and each of those outputs still has the executors
    # that verified it (a subtask decided again is run again by whichever node takes it).
    assert counts == sorted(counts), counts
    after = {r["index"]: r for r in map(json.loads, result.stdout.splitlines())}
    for index, record in verified_before.items():
        assert after[index] == record, (
            f"subtask {index}, verified by {record['executors']} before a stop, was decided again: "
            f"by {after[index]['executors']}{why}"
        )
