"""Virtual time: a heap of events, run in time order, one at a time.

Theory of operation:

An event is a function and its arguments, due at a virtual time in seconds.
``run`` pops the earliest event, sets ``now`` to its time and calls it; the
event may schedule more. Events due at the same time run in the order they were
scheduled (a counter breaks ties), so one seed gives one order of events, and
nothing here reads the wall clock.

A cancelled timer is not removed from the heap: whoever scheduled it checks,
when it fires, that it is still the one wanted (a token, or the incarnation of
the peer it belongs to). That costs one cheap call instead of a search of the
heap.

The last ``TRACE_EVENTS`` events run are kept, as they were called, for the
short trace printed when an invariant fails.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["TRACE_EVENTS", "Clock"]

TRACE_EVENTS: Final = 40

Action = Callable[..., None]


class Clock:
    """The event heap and virtual time."""

    __slots__ = ("_heap", "_seq", "events", "max_pending", "now", "recent", "stopped")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Action, tuple[object, ...]]] = []
        self._seq = 0
        self.events = 0  # events run so far
        self.max_pending = 0  # the most events ever waiting in the heap
        self.stopped = False
        self.recent: deque[tuple[float, Action, tuple[object, ...]]] = deque(maxlen=TRACE_EVENTS)

    def at(self, when: float, action: Action, *args: object) -> None:
        """Run ``action(*args)`` at virtual time ``when`` (now, if ``when`` is in the past)."""
        self._seq += 1
        heapq.heappush(self._heap, (when if when > self.now else self.now, self._seq, action, args))

    def after(self, delay: float, action: Action, *args: object) -> None:
        self.at(self.now + delay, action, *args)

    def stop(self) -> None:
        """End ``run`` after the event under way."""
        self.stopped = True

    def run(self, until: float) -> None:
        """Run events in time order until ``stop``, until none is left, or until the next is due after ``until``."""
        heap, pop, recent = self._heap, heapq.heappop, self.recent
        while heap and not self.stopped:
            if len(heap) > self.max_pending:
                self.max_pending = len(heap)
            when, _, action, args = heap[0]
            if when > until:
                self.now = until
                return
            pop(heap)
            self.now = when
            recent.append((when, action, args))
            action(*args)
            self.events += 1

    def trace(self) -> list[str]:
        """The last events run, oldest first, one line each."""
        lines = []
        for when, action, args in self.recent:
            name = getattr(action, "__qualname__", repr(action))
            owner = getattr(getattr(action, "__self__", None), "label", None)  # whose method: "peer 3"
            text = ", ".join(_short(a) for a in args)
            lines.append(f"{when:12.6f}  {owner + ': ' if isinstance(owner, str) else ''}{name}({text})"[:240])
        return lines


def _short(value: object) -> str:
    """An argument as the trace shows it: peers by their number, jobs by 8 hex digits, replicas as index.replica."""
    label = getattr(value, "label", None)
    if isinstance(label, str):
        return label
    if isinstance(value, bytes):
        return value.hex()[:8]
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple | list):
        inner = ", ".join(_short(v) for v in value[:3])
        return f"({inner}{', ...' if len(value) > 3 else ''})"
    index, replica = getattr(value, "index", None), getattr(value, "replica", None)
    if isinstance(index, int) and isinstance(replica, int):
        return f"{type(value).__name__}({index}.{replica})"
    name = getattr(value, "__qualname__", None)
    if callable(value) and isinstance(name, str):
        return name
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
