"""Run ``python -m meshnode`` processes for tests, and always clean them up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..waiting import MEET, STEP, poll

__all__ = ["NodeProcess", "api_get", "free_tcp_port", "lone_node", "mesh_of", "meshnode", "nodes", "pair", "peers_json", "poll"]


class NodeProcess:
    def __init__(
        self, data_dir: Path, args: list[str], *, log_name: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        """Start a node on ``data_dir``; its stderr goes to ``<log_name or data dir name>.stderr`` beside it
        (give a restarted node a log of its own, or the first run's log is overwritten). ``env``: its
        environment (default: this process's)."""
        self.data_dir = data_dir
        self.stderr_path = data_dir.parent / f"{log_name or data_dir.name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshnode", "--data-dir", str(data_dir), *args],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env={**(env or os.environ), "MESHNODE_DATA_DIR": ""},
        )  # fmt: skip

    @property
    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = STEP) -> dict[str, Any]:
        """Wait for the node's api.json (written once it is fully up).

        Only this process's file counts: a node killed on the same data dir leaves its own behind.
        """
        api = self.data_dir / "api.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.stderr}")
            if api.exists():
                try:
                    info = dict(json.loads(api.read_text()))
                except ValueError:
                    info = {}  # being written
                if info.get("pid") == self.proc.pid:
                    return info
            time.sleep(0.05)
        raise AssertionError(f"node not ready after {timeout} s:\n{self.stderr}")

    def dial_addr(self, timeout: float = STEP) -> str:
        """The address the node logged it listens on (the line can follow api.json by a moment)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr.splitlines():
                if "listening" in line:
                    return line.split()[-1]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no listening line:\n{self.stderr}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = STEP) -> float:
        """Send ``sig``; return how long the process took to exit.

        Raises:
            subprocess.TimeoutExpired: it did not exit within ``timeout`` seconds.
        """
        start = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stderr.close()


@contextlib.contextmanager
def lone_node(data_dir: Path, *args: str) -> Iterator[NodeProcess]:
    """A node alone on loopback (no mDNS, no bootstrap: jobs run with replicas 1), killed on exit."""
    from .test_node_cli import LOOPBACK

    started = NodeProcess(data_dir, [*LOOPBACK, *args])
    try:
        started.wait_ready()
        yield started
    finally:
        started.kill()


def pair(tmp_path: Path, nodes: list[NodeProcess]) -> tuple[NodeProcess, dict[str, Any], NodeProcess, dict[str, Any]]:
    """Nodes ``a`` and ``b`` (b bootstrapped to a) on loopback, once a lists b as alive; with their api.json."""
    from .test_node_cli import LOOPBACK

    a = NodeProcess(tmp_path / "a", LOOPBACK)
    nodes.append(a)
    a_info = a.wait_ready()
    b = NodeProcess(tmp_path / "b", [*LOOPBACK, "--bootstrap", a.dial_addr()])
    nodes.append(b)
    b_info = b.wait_ready()
    poll(lambda: any(p["state"] == "alive" for p in api_get(a.data_dir, "/v1/peers")["peers"]), MEET, "the two nodes to meet")
    return a, a_info, b, b_info


def mesh_of(
    tmp_path: Path, nodes: list[NodeProcess], count: int, *args: str
) -> list[tuple[NodeProcess, dict[str, Any]]]:  # fmt: skip
    """``count`` nodes ``a``, ``b``, ... on loopback, every other one bootstrapped to ``a`` and started at
    once, returned once ``a`` lists them all as alive; each with its api.json. ``args``: more flags for each."""
    from .test_node_cli import LOOPBACK

    a = NodeProcess(tmp_path / "a", [*LOOPBACK, *args])
    nodes.append(a)
    started = [(a, a.wait_ready())]
    others = [NodeProcess(tmp_path / chr(ord("a") + i), [*LOOPBACK, *args, "--bootstrap", a.dial_addr()])
              for i in range(1, count)]  # fmt: skip
    nodes.extend(others)
    started += [(node, node.wait_ready()) for node in others]
    poll(lambda: sum(p["state"] == "alive" for p in api_get(a.data_dir, "/v1/peers")["peers"]) == count - 1, MEET,
         f"the {count} nodes to meet")  # fmt: skip
    return started


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.kill()


def meshnode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshnode", *args], capture_output=True, text=True, timeout=timeout)


def peers_json(data_dir: Path) -> list[dict[str, Any]]:
    result = meshnode("peers", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def free_tcp_port() -> int:
    """A loopback TCP port nothing listens on now (for a node that must come back on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_get(data_dir: Path, path: str) -> Any:
    """``GET path`` from the node running with ``data_dir``, as the CLI commands do, without a process per call.

    The node may answer slowly on a busy machine: it gets longer than the CLI's few seconds.
    """
    from meshnode.api.client import ApiClient

    return ApiClient.for_data_dir(data_dir, timeout=STEP).get(path)
