"""Fixtures for the bundled task modules in tasks_wasm/: run them exactly as the mesh does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshnode.core.manifest import TaskLimits
from meshnode.errors import SandboxError
from meshnode.sandbox.runtime import Sandbox

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks_wasm"
LIMITS = TaskLimits(fuel=1 << 40, memory=256 << 20, timeout_ms=120_000, max_output=256 << 20)


class TaskFailed(Exception):
    """The sandbox reported a failure (the task's own task_error, a trap, fuel, ...) instead of an output."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(slots=1) as sb:
        yield sb


@pytest.fixture(scope="session")
def run_task(sandbox: Sandbox) -> Callable[[str, bytes], bytes]:
    """Return ``run_task(name, input_bytes) -> output_bytes`` for the committed tasks_wasm/<name>.wasm.

    Each call is one subtask in the real sandbox (fresh instance, fuel and epoch on);
    a failure raises ``TaskFailed`` with its code and message.
    """

    def run(name: str, data: bytes) -> bytes:
        try:
            module = sandbox.load((TASKS_DIR / f"{name}.wasm").read_bytes())
        except SandboxError as exc:
            raise TaskFailed(exc.error.code, exc.error.message) from None
        outcome = sandbox.run_sync(module, data, LIMITS)
        if outcome.error is not None:
            raise TaskFailed(outcome.error.code, outcome.error.message)
        assert outcome.output is not None
        return outcome.output

    return run
