"""Run a job's subtasks on this machine only: the ``exec`` command and its library form."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import trio

from ..core.manifest import TaskLimits
from ..core.outcome import TaskOutcome
from ..core.thief import CHUNK_SECONDS, MAX_CHUNK
from .python_runtime import PythonScript
from .runtime import Sandbox, TaskModule

__all__ = ["run_locally"]


def next_chunk_size(size: int, elapsed: float) -> int:
    """Grow or shrink a chunk towards ``CHUNK_SECONDS`` of work."""
    if elapsed <= 0:
        return min(size * 2, MAX_CHUNK)
    ideal = size * CHUNK_SECONDS / elapsed
    return max(1, min(MAX_CHUNK, int(ideal), size * 2))


async def run_locally(
    sandbox: Sandbox,
    module: TaskModule | PythonScript,
    inputs: Sequence[bytes],
    limits: TaskLimits,
    emit: Callable[[int, TaskOutcome], None],
    *,
    entry: str = "run",
) -> None:
    """Run every input through ``module`` on the sandbox's slots, calling ``emit`` in input order.

    Subtasks start in input order, ``sandbox.slots`` chunks at a time; a result that
    finishes early waits in a reorder buffer until those before it are emitted.
    """
    next_index = 0
    pending: dict[int, TaskOutcome] = {}
    emitted = 0

    async def worker() -> None:
        nonlocal next_index, emitted
        size = 1
        while next_index < len(inputs):
            start = next_index
            next_index = end = min(len(inputs), start + size)
            t0 = time.perf_counter()
            outcomes = await sandbox.run_many(module, inputs[start:end], limits, entry=entry)
            size = next_chunk_size(end - start, time.perf_counter() - t0)
            pending.update(zip(range(start, end), outcomes, strict=True))
            while emitted in pending:
                emit(emitted, pending.pop(emitted))
                emitted += 1

    async with trio.open_nursery() as nursery:
        for _ in range(min(sandbox.slots, len(inputs))):
            nursery.start_soon(worker)
