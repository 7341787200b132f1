"""A ``python -m meshnode`` process a benchmark started: waiting until it serves, reading its address."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path


def wait_until_serving(data_dir: Path, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    """Return once the node has written its ``api.json``; exit the benchmark, with its log, if it died or never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((data_dir / "api.json").read_text()).get("pid") == proc.pid:
                return
        if proc.poll() is not None:
            raise SystemExit(f"{data_dir.name} exited with {proc.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    raise SystemExit(f"{data_dir.name} not ready after {timeout:g} s")


def listening_addr(log_path: Path) -> str:
    """The last address the node's log says it listens on."""
    return [line.split()[-1] for line in log_path.read_text().splitlines() if "listening" in line][-1]
