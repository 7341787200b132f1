"""A node's stderr, with a peer that vanished: libp2p's records go through meshnode's logging, in its format;
under ``--log-json`` the records that matter carry fields (``event``, ``peer``, ``job``, figures)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

from tests.sandbox.modules import ECHO

from .nodes import NodeProcess, api_get, meshnode, nodes, poll  # noqa: F401  (nodes is a fixture)
from .test_node_cli import LOOPBACK

HUMAN_LINE = re.compile(r"\d\d:\d\d:\d\d  \S")


def json_records(node: NodeProcess) -> list[dict[str, Any]]:
    """Every line of the node's stderr, parsed: a line that is not JSON fails the test here."""
    records = []
    for line in node.stderr.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{node.stderr}") from None
    return records


def test_libp2p_records_go_through_meshnode_logging(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    as_json = NodeProcess(tmp_path / "json", [*LOOPBACK, "--log-json"])
    plain = NodeProcess(tmp_path / "plain", LOOPBACK)
    debug = NodeProcess(tmp_path / "debug", [*LOOPBACK, "--log-json", "--log-level", "debug"])
    watchers = [as_json, plain, debug]
    nodes.extend(watchers)
    for node in watchers:
        node.wait_ready()
    echo = tmp_path / "echo.wasm"
    echo.write_bytes(ECHO)
    done = meshnode("submit", str(echo), "--range", "3", "--replicas", "1", "--quorum", "1",
                    "--data-dir", str(as_json.data_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split()[1].rstrip(":")
    boot = [arg for node in watchers for arg in ("--bootstrap", api_get(node.data_dir, "/v1/node")["addrs"][0])]
    doomed = NodeProcess(tmp_path / "doomed", [*LOOPBACK, *boot])
    nodes.append(doomed)
    doomed_id = doomed.wait_ready()["peer_id"]
    for node in watchers:
        poll(lambda node=node: "peer joined" in node.stderr, 20, "every node to see the doomed one")
    doomed.kill()  # SIGKILL: it vanishes without a goodbye

    poll(lambda: "Failed to open TCP stream" in debug.stderr, 30, "libp2p's own record of a failed redial")
    for node in watchers:
        # meshnode's line about the failed redial, or (what this test is here to catch) libp2p's bare one
        failed = re.compile("peer unreachable|Failed to open")
        poll(lambda node=node: failed.search(node.stderr), 30, "a redial to fail")
    for node in watchers:
        node.stop(signal.SIGINT)

    records = json_records(as_json)
    assert not [r for r in records if r["logger"].startswith("libp2p")]  # shown at debug level only
    assert sum("peer unreachable" in r["msg"] and doomed_id in r["msg"] for r in records) == 1
    # the fields a program reads, beside the sentence
    events = {(r["event"], r.get("peer")): r for r in records if "event" in r}
    joined, unreachable = events["peer_joined", doomed_id], events["peer_unreachable", doomed_id]
    assert doomed_id in joined["msg"] and doomed_id in unreachable["msg"]
    assert joined["slots"] >= 1 and joined["addr"].startswith("/ip4/127.0.0.1/") and unreachable["reason"]
    submitted, finished = events["job_submitted", None], events["job_finished", None]
    assert submitted["job"] == finished["job"] == job_id
    assert (submitted["subtasks"], submitted["replicas"], submitted["quorum"]) == (3, 1, 1)
    assert (finished["subtasks"], finished["verified"], finished["failed"], finished["disputed"]) == (3, 3, 0, 0)
    assert finished["seconds"] >= 0 and finished["level"] == "info" and job_id in finished["msg"]
    records = json_records(debug)
    libp2p = [r for r in records if r["logger"].startswith("libp2p")]
    assert {"debug", "error"} <= {r["level"] for r in libp2p}
    assert any("Failed to open TCP stream" in r["msg"] for r in libp2p)
    lines = plain.stderr.splitlines()
    assert lines and all(HUMAN_LINE.match(line) for line in lines), plain.stderr
    assert "Failed to open TCP stream" not in plain.stderr
