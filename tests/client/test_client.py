"""``meshnode.Client`` against a real node process: from a plain script, streaming, map, cancel, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshnode import Client, JobRefused, NodeNotRunning, TaskFailed
from meshnode.errors import ConfigError, InputError, MeshError
from tests.cli.nodes import NodeProcess

from ..waiting import JOB, poll

ALONE = {"replicas": 1, "quorum": 1}


def test_a_plain_script_submits_and_reads_every_result(node: NodeProcess, tasks: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from meshnode import Client

        with Client({str(node.data_dir)!r}) as client:
            job = client.submit({str(tasks["echo"])!r}, [{{"n": i}} for i in range(30)], replicas=1, quorum=1)
            results = job.wait()
            print(json.dumps({{"subtasks": job.subtasks, "outputs": [r.output for r in results],
                              "state": job.status()["state"]}}))
    """))
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=JOB)
    assert ran.returncode == 0, ran.stderr + node.stderr
    assert json.loads(ran.stdout) == {"subtasks": 30, "outputs": [{"n": i} for i in range(30)], "state": "finished"}


def test_results_stream_while_the_job_runs(node: NodeProcess, tasks: dict[str, Path]) -> None:
    with Client(node.data_dir) as client:
        job = client.submit(tasks["slow"], range(24), **ALONE)
        stream = job.results()
        first = next(stream)
        assert first.ok and first.output == first.index  # the input, a JSON number, comes back
        assert job.status()["state"] == "running"  # the first result came before the end
        rest = list(stream)
        assert sorted(r.index for r in [first, *rest]) == list(range(24))
        assert job.status()["state"] == "finished"
        assert [r.index for r in job.wait()] == list(range(24))  # again, from the start, in index order


def test_map_gives_outputs_in_input_order(node: NodeProcess, tasks: dict[str, Path]) -> None:
    with Client(node.data_dir) as client:
        assert list(client.map(tasks["echo"], range(100), **ALONE)) == list(range(100))
        assert list(client.map(tasks["echo"].read_bytes(), ["a", b"\xff"], **ALONE)) == [b"a", b"\xff"]


def test_a_failed_subtask_is_a_result_and_raises_when_its_value_is_asked(node: NodeProcess, tasks: dict[str, Path]) -> None:
    with Client(node.data_dir) as client:
        [result] = client.submit(tasks["trap"], [b"x"], **ALONE).wait()
        assert not result.ok and result.error is not None and result.error.code == "trap"
        with pytest.raises(TaskFailed, match=r"subtask 0 failed: trap: .*divide by zero"):
            result.value()
        with pytest.raises(TaskFailed):
            list(client.map(tasks["trap"], [1, 2], **ALONE))


def test_cancel_stops_the_job_and_its_results_end(node: NodeProcess, tasks: dict[str, Path]) -> None:
    with Client(node.data_dir) as client:
        job = client.submit(tasks["slow"], range(400), **ALONE)
        stream = job.results()
        next(stream)
        assert job.cancel()["state"] == "cancelled"
        decided = 1 + len(list(stream))  # ends, though most subtasks never ran
        assert decided < 400
        assert job.status()["state"] == "cancelled"
        again = client.job(job.id)
        assert again.subtasks == 400 and len(again.wait()) == decided


def test_jobs_peers_and_node(node: NodeProcess, tasks: dict[str, Path]) -> None:
    with Client(node.data_dir) as client:
        job = client.submit(tasks["echo"], [1], label="labelled", **ALONE)
        job.wait()
        listed = {j["job_id"]: j for j in client.jobs()}
        assert listed[job.id]["label"] == "labelled" and listed[job.id]["state"] == "finished"
        assert client.peers() == []  # alone on loopback, without mDNS
        assert client.node()["peer_id"] == json.loads((node.data_dir / "api.json").read_text())["peer_id"]


def test_a_client_by_url_and_token(node: NodeProcess, tasks: dict[str, Path]) -> None:
    api = json.loads((node.data_dir / "api.json").read_text())
    with Client(url=api["url"], token=api["token"]) as client:
        assert list(client.map(tasks["echo"], [7], **ALONE)) == [7]
    with Client(url=api["url"], token="not-the-token") as wrong, pytest.raises(MeshError, match="refused the token"):
        wrong.jobs()
    with pytest.raises(ConfigError, match="both url and token"):
        Client(url=api["url"])


def test_no_node_running_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match=r"no meshnode is running with data dir .*start one with: python -m meshnode"):
        Client(tmp_path)


def test_a_job_the_node_cannot_take_is_refused_before_it_exists(
    node: NodeProcess, tasks: dict[str, Path], tmp_path: Path
) -> None:
    with Client(node.data_dir) as client:
        before = len(client.jobs())
        with pytest.raises(JobRefused, match="^the node refused the job: the module cannot run: "):
            client.submit(b"\0asm\x01\0\0\0\x99junk", [b"x"], **ALONE)
        with pytest.raises(InputError, match="not a WebAssembly module"):
            client.submit(b"print('hi')", [b"x"], **ALONE)
        (tmp_path / "notes.txt").write_text("hello")
        with pytest.raises(InputError, match="notes.txt is not a WebAssembly module"):
            client.submit(tmp_path / "notes.txt", [b"x"], **ALONE)
        with pytest.raises(InputError, match="no inputs"):
            client.submit(b"\0asm\x01\0\0\0", [], **ALONE)
        with pytest.raises(InputError, match="input 1 cannot be sent"):
            client.submit(b"\0asm\x01\0\0\0", [1, object()], **ALONE)
        with pytest.raises(JobRefused, match="quorum"):
            client.submit(tasks["echo"], [1], replicas=1, quorum=6)
        assert len(client.jobs()) == before


def test_results_of_a_job_from_an_earlier_run_of_the_node(node: NodeProcess, tasks: dict[str, Path], tmp_path: Path) -> None:
    """A restarted node has the job only in its journal: its results still come, in index order."""
    data_dir = tmp_path / "restarted"
    from tests.cli.test_node_cli import LOOPBACK

    first = NodeProcess(data_dir, LOOPBACK)
    try:
        first.wait_ready()
        with Client(data_dir) as client:
            job_id = client.submit(tasks["echo"], range(50), **ALONE).id
            poll(lambda: client.job(job_id).status()["state"] == "finished", JOB, "the job to finish")
    finally:
        first.stop()
        first.kill()
    second = NodeProcess(data_dir, LOOPBACK, log_name="second")
    try:
        second.wait_ready()
        with Client(data_dir) as client:
            assert [r.output for r in client.job(job_id).results()] == list(range(50))
    finally:
        second.kill()


def test_importing_the_client_loads_none_of_the_node() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, meshnode; meshnode.Client; print(sorted(m for m in ('trio', 'wasmtime', "
         "'libp2p', 'starlette', 'sqlite3') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr
