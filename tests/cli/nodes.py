"""Run ``python -m meshnode`` processes for tests, and always clean them up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class NodeProcess:
    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.stderr_path = data_dir.parent / f"{data_dir.name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshnode", "--data-dir", str(data_dir), *args],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env={**os.environ, "MESHNODE_DATA_DIR": ""},
        )  # fmt: skip

    @property
    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        """Wait for the node's api.json (written once it is fully up)."""
        api = self.data_dir / "api.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.stderr}")
            if api.exists():
                try:
                    return dict(json.loads(api.read_text()))
                except ValueError:
                    pass  # being written
            time.sleep(0.05)
        raise AssertionError(f"node not ready after {timeout} s:\n{self.stderr}")

    def dial_addr(self) -> str:
        for line in self.stderr.splitlines():
            if "listening" in line:
                return line.split()[-1]
        raise AssertionError(f"no listening line:\n{self.stderr}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10) -> float:
        """Send ``sig``; return how long the process took to exit."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stderr.close()


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


def poll(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
