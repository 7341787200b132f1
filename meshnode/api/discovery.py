"""How CLI commands find the node running with a given data dir.

A running node writes ``<data dir>/api.json`` with its API URL, token, peer ID
and pid, and removes it on the way out. Commands read the file of the data dir
they were given, so several nodes on one machine (one data dir each) never get
mixed up. The file holds the token, so it is private to the user (mode 0600),
and it is replaced atomically, so a reader never sees half of it.

A node that is killed cannot remove its file; readers therefore check that the
pid is still alive, and the client treats a refused connection the same way.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import NodeNotRunning

__all__ = ["API_FILE_NAME", "ApiEndpoint", "NodeNotRunning", "read_api_file", "remove_api_file", "write_api_file"]

API_FILE_NAME: Final = "api.json"


@dataclass(frozen=True, slots=True)
class ApiEndpoint:
    """Where a running node's API is, and how to authenticate to it."""

    url: str
    token: str
    peer_id: str
    pid: int


def write_api_file(data_dir: Path, *, url: str, token: str, peer_id: str, pid: int) -> Path:
    """Publish a node's API endpoint in its data dir (atomically, mode 0600).

    Call it once the API is listening; an existing file (from a node that was
    killed) is replaced.

    Args:
        data_dir: the node's data dir.
        url: the URL ``serve_api`` reported, e.g. ``"http://127.0.0.1:54321"``.
        token: the API's bearer token.
        peer_id: the node's peer ID, so commands can say which node answered.
        pid: the node's process ID (``os.getpid()``).

    Returns:
        The path of the file written.

    Raises:
        OSError: the data dir is not writable.
    """
    path = data_dir / API_FILE_NAME
    text = json.dumps({"url": url, "token": token, "peer_id": peer_id, "pid": pid}, indent=2) + "\n"
    # mkstemp creates the file with mode 0600, so the token is never readable by
    # others, not even between creation and a chmod.
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{API_FILE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
    return path


def remove_api_file(data_dir: Path, pid: int) -> None:
    """Remove the data dir's API file if it still names ``pid``.

    A second node started on the same data dir may have replaced the file; that
    node's file is left alone. Missing or unreadable files are ignored.
    """
    path = data_dir / API_FILE_NAME
    # A node starting on this data dir between the read and the unlink would lose
    # its file; both would have to race on one data dir, which is already a mistake.
    try:
        if _parse(path.read_text(encoding="utf-8")).pid == pid:
            path.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def read_api_file(data_dir: Path) -> ApiEndpoint:
    """The endpoint of the node running with ``data_dir``.

    Raises:
        NodeNotRunning: the file is missing, unreadable or malformed, or its
            process has exited.
    """
    path = data_dir / API_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NodeNotRunning(data_dir) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeNotRunning(data_dir, f"cannot read {path}: {exc}") from exc
    try:
        endpoint = _parse(text)
    except ValueError as exc:
        raise NodeNotRunning(data_dir, f"{path} is malformed: {exc}") from None
    if not _pid_alive(endpoint.pid):
        raise NodeNotRunning(data_dir, f"{path} names pid {endpoint.pid}, which has exited")
    return endpoint


def _parse(text: str) -> ApiEndpoint:
    """The endpoint in an API file's text.

    Raises:
        ValueError: not a JSON object with the four fields of the right types.
    """
    data: Any = json.loads(text)  # JSONDecodeError is a ValueError
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for key in ("url", "token", "peer_id"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{key!r} is not a non-empty string")
    pid = data.get("pid")
    # bool is an int subclass; and pid 0 or -1 would make os.kill signal a
    # whole process group, so only positive pids are valid
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError("'pid' is not a positive integer")
    return ApiEndpoint(url=data["url"], token=data["token"], peer_id=data["peer_id"], pid=pid)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    if os.name == "nt":
        # On Windows os.kill(pid, 0) sends CTRL_C_EVENT; ask the OS politely instead.
        import psutil

        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
