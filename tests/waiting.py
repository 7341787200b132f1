"""Waiting in tests: for a condition, never for a guessed time.

The suite runs on machines that are busy with other work (CI runners, a laptop
building something else), where everything takes several times longer than on
an idle machine. So a test that waits

* waits for the condition it needs (``wait_until`` in a trio test, ``poll`` in a
  blocking one, or a trio event), and goes on as soon as it holds;
* gives up only after a deadline that bounds a hang, not one that measures
  speed: the constants below are sized for a machine whose cores are all busy
  with other work, and a passing test never waits them out;
* asserts a wall-clock bound only where the bound is the product's promise under
  load. Where a test means "this happened by the fast path", it asserts the fast
  path directly and that it beat the slow path (a goodbye must be processed
  before the peer could have been timed out), measured when the event was
  handled, not around the machinery that waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

__all__ = ["JOB", "MEET", "STEP", "poll", "wait_until"]

# Deadlines, in seconds (see above: each bounds a hang; a passing wait ends as soon as it can).
STEP = 30.0  # one thing that takes well under a second on an idle machine: a node starts, a message arrives
MEET = 60.0  # nodes on loopback find each other and fill their peer tables
JOB = 600.0  # a job of many subtasks that takes seconds on an idle machine runs to the end


async def wait_until(condition: Callable[[], object], timeout: float, what: str, *, every: float = 0.02) -> float:
    """Poll ``condition`` from a trio task until it holds; return the seconds it took.

    Raises:
        AssertionError: it did not hold within ``timeout`` seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await trio.sleep(every)
    return time.monotonic() - start


def poll(
    condition: Callable[[], object], timeout: float, what: str, *, every: float = 0.1,
    report: Callable[[], str] | None = None,
) -> float:  # fmt: skip
    """Blocking ``wait_until``, for tests that drive processes; ``report`` adds context to a failure.

    Raises:
        AssertionError: it did not hold within ``timeout`` seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            context = f"\n{report()}" if report else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{context}")
        time.sleep(every)
    return time.monotonic() - start
