"""``python -m meshnode`` as a user runs it: start, find a peer, list peers, stop cleanly."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from ..waiting import MEET, STEP
from .nodes import NodeProcess, meshnode, nodes, peers_json, poll  # noqa: F401  (nodes is a fixture)

LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--no-mdns", "--presence-interval", "0.3"]


def test_two_nodes_find_each_other_and_a_stopped_one_is_gone_at_once(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a.wait_ready()
    assert "no peers yet" in meshnode("peers", "--data-dir", str(a.data_dir)).stdout
    b = NodeProcess(tmp_path / "b", [*LOOPBACK, "--bootstrap", a.dial_addr()])
    nodes.append(b)
    b_info = b.wait_ready()
    poll(lambda: [p["state"] for p in peers_json(a.data_dir)] == ["alive"], MEET, "a to see b")
    poll(lambda: [p["state"] for p in peers_json(b.data_dir)] == ["alive"], MEET, "b to see a")
    table = meshnode("peers", "--data-dir", str(a.data_dir)).stdout
    assert "PEER" in table and "alive" in table and b_info["peer_id"][-6:] in table

    # Stopping waits on nothing slow (the goodbye and the closing of connections have budgets
    # of their own): the process exits cleanly, within a deadline that only catches a hang.
    b.stop(signal.SIGTERM)
    assert b.proc.returncode == 0
    poll(lambda: [p["state"] for p in peers_json(a.data_dir)] == ["gone"], STEP, "b to be gone")
    # "At once": by the goodbye, before a could have timed b out (a logs which it was)
    assert f"peer left    {b_info['peer_id']}  (goodbye)" in a.stderr, a.stderr
    assert not (b.data_dir / "api.json").exists()
    a.stop(signal.SIGINT)
    assert a.proc.returncode == 0
    for node in (a, b):
        assert "Traceback" not in node.stderr, node.stderr


def test_one_node_per_data_dir(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    info = a.wait_ready()
    second = meshnode("--data-dir", str(a.data_dir), *LOOPBACK)
    assert second.returncode == 2
    assert f"another meshnode (pid {info['pid']}) is running with data dir {a.data_dir}" in second.stderr


def test_a_taken_port_is_refused_not_shared(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = ["--listen", f"/ip4/127.0.0.1/tcp/{port}", "--api", "127.0.0.1:0", "--no-mdns"]
    a = NodeProcess(tmp_path / "a", listen)
    nodes.append(a)
    a.wait_ready()
    second = meshnode("--data-dir", str(tmp_path / "b"), *listen)
    assert second.returncode == 2
    assert f"TCP port {port} on 127.0.0.1 is in use" in second.stderr


def test_peers_without_a_node_says_how_to_start_one(tmp_path: Path) -> None:
    result = meshnode("peers", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "no meshnode is running" in result.stderr and "start one with" in result.stderr


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "swarm.key"
    bad_key.write_text("not a key\n")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "meshnode.toml").write_text('slots = "many"\n')
    cases = [
        (["--data-dir", str(tmp_path / "x"), "--swarm-key", str(bad_key), *LOOPBACK], "is not a swarm key"),
        (["--data-dir", str(tmp_path / "x"), "--listen", "/ip4/nowhere/tcp/1"], "--listen"),
        (["--data-dir", str(tmp_path / "x"), "--bootstrap", "/ip4/127.0.0.1/tcp/1", *LOOPBACK], "--bootstrap"),
        (["--data-dir", str(tmp_path / "cfg")], "meshnode.toml: slots: 'many' is not a positive whole number"),
    ]
    for args, message in cases:
        result = meshnode(*args, timeout=MEET)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_swarm_key_command(tmp_path: Path) -> None:
    out = tmp_path / "swarm.key"
    assert meshnode("swarm-key", "-o", str(out)).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600
    from meshnode.net.swarm_key import load_swarm_key

    assert len(load_swarm_key(out)) == 32
    assert meshnode("swarm-key", "-o", str(out)).returncode == 2  # never overwrites a key


def test_log_json_gives_one_json_object_per_line(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    import json

    a = NodeProcess(tmp_path / "a", [*LOOPBACK, "--log-json"])
    nodes.append(a)
    info = a.wait_ready()
    a.stop()
    records = [json.loads(line) for line in a.stderr.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(info["peer_id"] in r["msg"] for r in records)
    assert records[-1]["msg"] == "stopping (SIGINT)"
