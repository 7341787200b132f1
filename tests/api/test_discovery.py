"""The api.json file: private, atomic, owned by one pid, and refused when its node is gone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from meshnode.api.discovery import (
    API_FILE_NAME,
    ApiEndpoint,
    NodeNotRunning,
    read_api_file,
    remove_api_file,
    write_api_file,
)

from .conftest import PEER_A

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def write(data_dir: Path, pid: int | None = None, token: str = "tok") -> Path:
    return write_api_file(data_dir, url="http://127.0.0.1:1234", token=token, peer_id=PEER_A, pid=pid or os.getpid())


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def assert_not_running(data_dir: Path, *words: str) -> None:
    with pytest.raises(NodeNotRunning) as caught:
        read_api_file(data_dir)
    message = str(caught.value)
    assert f"no meshnode is running with data dir {data_dir}" in message
    assert f"start one with: python -m meshnode --data-dir {data_dir}" in message
    for word in words:
        assert word in message
    assert caught.value.data_dir == data_dir


def test_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert path == tmp_path / API_FILE_NAME
    assert read_api_file(tmp_path) == ApiEndpoint("http://127.0.0.1:1234", "tok", PEER_A, os.getpid())


@posix_only
def test_the_file_is_private_from_the_start(tmp_path: Path) -> None:
    stale = tmp_path / API_FILE_NAME
    stale.write_text("{}")
    stale.chmod(0o644)
    old_inode = stale.stat().st_ino
    path = write(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # replaced, not rewritten in place: a reader sees the old file or the new one, never half of one
    assert path.stat().st_ino != old_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == [API_FILE_NAME]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, token="old")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path, token="new")
    monkeypatch.undo()
    assert read_api_file(tmp_path).token == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [API_FILE_NAME]


def test_remove_leaves_another_pids_file_alone(tmp_path: Path) -> None:
    write(tmp_path)
    remove_api_file(tmp_path, os.getpid() + 1)
    assert (tmp_path / API_FILE_NAME).exists()
    remove_api_file(tmp_path, os.getpid())
    assert not (tmp_path / API_FILE_NAME).exists()
    remove_api_file(tmp_path, os.getpid())  # already gone: nothing to do


def test_remove_leaves_an_unreadable_file_alone(tmp_path: Path) -> None:
    (tmp_path / API_FILE_NAME).write_text("garbage")
    remove_api_file(tmp_path, os.getpid())
    assert (tmp_path / API_FILE_NAME).read_text() == "garbage"


def test_read_a_missing_file(tmp_path: Path) -> None:
    assert_not_running(tmp_path)


def test_read_a_missing_data_dir(tmp_path: Path) -> None:
    assert_not_running(tmp_path / "never-created")


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "",
        "[]",
        '{"url": "http://127.0.0.1:1", "token": "t", "peer_id": "p"}',
        '{"url": "http://127.0.0.1:1", "token": "", "peer_id": "p", "pid": 1}',
        '{"url": "http://127.0.0.1:1", "token": "t", "peer_id": "p", "pid": "1"}',
        '{"url": "http://127.0.0.1:1", "token": "t", "peer_id": "p", "pid": true}',
        '{"url": "http://127.0.0.1:1", "token": "t", "peer_id": "p", "pid": 0}',
        '{"url": "http://127.0.0.1:1", "token": "t", "peer_id": "p", "pid": -1}',
    ],
)
def test_read_a_malformed_file(tmp_path: Path, text: str) -> None:
    (tmp_path / API_FILE_NAME).write_text(text)
    assert_not_running(tmp_path, "malformed")


def test_read_a_file_that_is_not_text(tmp_path: Path) -> None:
    (tmp_path / API_FILE_NAME).write_bytes(b"\xff\xfe\x00")
    assert_not_running(tmp_path)


def test_read_a_file_whose_process_has_exited(tmp_path: Path) -> None:
    pid = dead_pid()
    write(tmp_path, pid=pid)
    assert_not_running(tmp_path, f"pid {pid}", "exited")


def test_the_file_is_json_a_person_can_read(tmp_path: Path) -> None:
    data = json.loads(write(tmp_path).read_text())
    assert data == {"url": "http://127.0.0.1:1234", "token": "tok", "peer_id": PEER_A, "pid": os.getpid()}
