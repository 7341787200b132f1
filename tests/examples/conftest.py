"""The examples as a user runs them: one command each, against a real node process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.nodes import NodeProcess, lone_node

from ..waiting import JOB

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node alone on loopback (the examples then run each subtask once), shared by a module's tests."""
    with lone_node(tmp_path_factory.mktemp("examples") / "node", "--slots", "2") as started:
        yield started


def run_example(name: str, *args: str, node: NodeProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python examples/NAME ARGS --data-dir <the node's>``, run in ``cwd``; fails the test unless it exits 0."""
    command = [sys.executable, str(EXAMPLES / name), *args, "--data-dir", str(node.data_dir)]
    ran = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=JOB)
    assert ran.returncode == 0, f"{' '.join(command)} exited {ran.returncode}:\n{ran.stdout}\n{ran.stderr}\n{node.stderr}"
    return ran
