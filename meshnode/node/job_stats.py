"""What a job cost and who did its work, as its owner saw it: the job summary of ``submit`` and ``status``.

Counted in memory while the node runs (a job of an earlier run shows its counts only).
Sandbox CPU is estimated, as BOINC estimates a result's CPU time: the fuel of every
accepted run, times the seconds per unit of fuel this node measured on the job's own
subtasks (the other executors' clocks are theirs, and nothing here could check them).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JobStats"]


@dataclass
class JobStats:
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    fuel: int = 0  # over every accepted run: the fuel its quorum agreed on
    runs: Counter[str] = field(default_factory=Counter)  # accepted runs per executor (peer ID)
    own_fuel: int = 0  # this node's own runs of the job, timed: the seconds-per-fuel estimate
    own_seconds: float = 0.0
    input_bytes_sent: int = 0  # subtasks (inputs and their proofs) handed out to other peers, as sent
    output_bytes_received: int = 0  # outputs other peers pushed, as sent (packed)
    lost: int = 0  # replicas whose holder let its lease lapse or left: run again elsewhere
    added: int = 0  # replicas added because the first claims disagreed
    disputed: int = 0

    def accepted(self, executors: tuple[str, ...], fuel: int) -> None:
        """A verdict: each of ``executors`` ran the subtask with the agreed ``fuel``."""
        self.fuel += fuel * len(executors)
        self.runs.update(executors)

    def timed(self, fuel: int, seconds: float) -> None:
        """This node ran some of the job's subtasks itself, with this fuel in this time."""
        self.own_fuel += fuel
        self.own_seconds += seconds

    def end(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()

    def summary(self) -> dict[str, Any]:
        """JSON-ready: wall and sandbox seconds, fuel, runs per peer, bytes moved, retries, disputes."""
        wall = (self.ended if self.ended is not None else time.monotonic()) - self.started
        rate = self.own_seconds / self.own_fuel if self.own_fuel else None
        return {
            "wall_s": round(wall, 3),
            "sandbox_cpu_s": None if rate is None else round(self.fuel * rate, 3),
            "fuel": self.fuel,
            "runs_per_peer": dict(self.runs.most_common()),
            "input_bytes_sent": self.input_bytes_sent,
            "output_bytes_received": self.output_bytes_received,
            "replicas_lost": self.lost,
            "replicas_added": self.added,
            "disputed": self.disputed,
        }
