"""``python -m meshnode peers``: in-process against a real server, and end to end as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.api.discovery import write_api_file
from meshnode.errors import NodeNotRunning
from meshnode.cli.main import command
from meshnode.cli.node_commands import cmd_peers
from meshnode.cli.parser import build_parser

from ..api.conftest import PEER_A, PEER_B, FakeView, RunningServer, sample_peer, server_thread


def peers_args(data_dir: Path | None, *, as_json: bool = False) -> argparse.Namespace:
    return argparse.Namespace(command="peers", data_dir=None if data_dir is None else str(data_dir), json=as_json)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningServer]:
    """A fake node with two peers, published in tmp_path as a real node would."""
    view = FakeView(peer_list=[sample_peer(), sample_peer(peer_id=PEER_A, state="stale", rtt_ms=None)])
    with server_thread(view) as server:
        write_api_file(tmp_path, url=server.url, token=server.token, peer_id=PEER_A, pid=os.getpid())
        yield server


def test_the_parser(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["peers", "--data-dir", str(tmp_path), "--json"])
    assert (args.command, args.data_dir, args.json) == ("peers", str(tmp_path), True)
    assert command(args.command) is cmd_peers
    assert parser.parse_args(["peers"]).json is False


def test_peers_prints_the_table(tmp_path: Path, node: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_peers(peers_args(tmp_path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["PEER", "STATE", "ADDRESS"]
    assert [line.split()[1] for line in lines[1:]] == ["alive", "stale"]


def test_peers_json_is_the_list_the_node_sent(
    tmp_path: Path, node: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_peers(peers_args(tmp_path, as_json=True)) == 0
    assert json.loads(capsys.readouterr().out) == node.view.peer_list


def test_peers_finds_the_data_dir_in_the_environment(
    tmp_path: Path, node: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHNODE_DATA_DIR", str(tmp_path))
    assert cmd_peers(peers_args(None, as_json=True)) == 0
    assert [p["peer_id"] for p in json.loads(capsys.readouterr().out)] == [PEER_B, PEER_A]


def test_peers_with_no_node_running_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning) as caught:
        cmd_peers(peers_args(tmp_path))
    assert str(tmp_path) in str(caught.value) and "start one with" in str(caught.value)


def test_the_command_module_imports_no_http_stack() -> None:
    """The CLI imports it on every run; ``meshnode id`` must not pay for httpx, starlette and hypercorn."""
    code = "import sys, meshnode.cli.node_commands; print(sorted({'httpx', 'starlette', 'hypercorn'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_asking_a_node_for_its_peers_imports_neither_trio_nor_an_http_library(
    tmp_path: Path, node: RunningServer
) -> None:
    """Scripts run ``meshnode peers`` once a second to watch a node: it took 0.45 CPU-s with httpx,
    whose transport imports trio; the standard library's http.client takes a tenth of that."""
    code = (
        "import sys; from meshnode.cli.main import main; code = main(sys.argv[1:]); "
        "print(sorted({'trio', 'httpx', 'httpcore', 'starlette', 'hypercorn'} & set(sys.modules)), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code, "peers", "--data-dir", str(tmp_path), "--json"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["peer_id"]
    assert result.stderr.strip() == "[]"


def meshnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshnode", *args], capture_output=True, text=True, timeout=60)


def test_peers_end_to_end(tmp_path: Path, node: RunningServer) -> None:
    table = meshnode("peers", "--data-dir", str(tmp_path))
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("PEER")
    assert len(table.stdout.splitlines()) == 3
    as_json = meshnode("peers", "--data-dir", str(tmp_path), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == node.view.peer_list


def test_peers_end_to_end_with_no_node(tmp_path: Path) -> None:
    result = meshnode("peers", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert str(tmp_path) in result.stderr and "start one with" in result.stderr
