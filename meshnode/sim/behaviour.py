"""What a simulated run produces: the true result of a subtask, and what each kind of peer claims.

Theory of operation:

A subtask's true result is a pure function of (job, index): a hash gives its
output hash, its fuel, how long it runs at speed 1 (relative to the scenario's
mean) and whether the task refuses that input (a ``task_error`` every honest
peer agrees on). So every honest run of a subtask, anywhere, claims the same
thing, as deterministic fuel metering makes it in the real sandbox.

A peer's ``Behaviour`` says how it departs from that:

    kind      claims
    --------  ----------------------------------------------------------------
    honest    the true result
    wrong     at ``rate``: an output of its own (a hash nobody else reports)
    forger    at ``rate``: the true output with another fuel count (work skipped)
    colluder  at ``rate``: the output its group agreed on, the same for all of
              them, with the true fuel count (so their claims agree exactly)
    lazy      nothing: it takes work, holds it for the run's time, and drops it
    staller   nothing, ever: it takes work and keeps it, renewing its leases
              (its thief does) without running it

Every kind behaves until ``after`` (a peer that earns trust, then turns). Draws
at ``rate`` come from the simulation's one random source, so they too are fixed
by the seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Final, Literal

from ..core.outcome import TASK_ERROR
from ..core.peer_id import PeerId
from ..core.result import ResultClaim

__all__ = ["ENGINE", "Behaviour", "Truth", "claim_of", "truth"]

ENGINE: Final = "sim-engine/1"  # every simulated peer runs one engine, so fuel is always compared
OUTPUT_SIZE: Final = 256

Kind = Literal["honest", "wrong", "forger", "colluder", "lazy", "staller"]


@dataclass(frozen=True, slots=True)
class Behaviour:
    kind: Kind = "honest"
    rate: float = 0.0  # how often it cheats (wrong, forger, colluder)
    group: int = -1  # colluders: which group
    after: float = 0.0  # it behaves until this virtual time (a peer that turns bad once trusted)

    def cheats(self, now: float) -> bool:
        """Whether it departs from the truth at all at ``now``."""
        return self.kind != "honest" and now >= self.after

    @property
    def label(self) -> str:
        if self.kind == "honest":
            return "honest"
        if self.kind in ("lazy", "staller"):
            return self.kind
        group = f" group {self.group}" if self.kind == "colluder" else ""
        return f"{self.kind}{group} at {self.rate:g}"


@dataclass(frozen=True, slots=True)
class Truth:
    """The result every honest run of one subtask claims."""

    status: str
    output_sha256: bytes | None
    fuel: int
    cost: float  # run time at speed 1, relative to the scenario's mean (0.5 to 1.5)
    message: str = ""


def truth(job_id: bytes, index: int, task_errors: float) -> Truth:
    """The true result of subtask ``index`` of ``job_id``; a ``task_errors`` share of subtasks refuse their input."""
    h = hashlib.sha256(job_id + index.to_bytes(8, "big")).digest()
    fuel = 10**8 + int.from_bytes(h[:4], "big") % (9 * 10**8)
    cost = 0.5 + h[4] / 255
    if int.from_bytes(h[5:9], "big") < task_errors * 2**32:
        return Truth(TASK_ERROR, None, fuel // 3, cost / 3, f"row {index} is not a number")
    return Truth("ok", h, fuel, cost)


def claim_of(
    behaviour: Behaviour, true: Truth, job_id: bytes, index: int, replica: int, me: PeerId, rng: random.Random,
    now: float = 0.0,
) -> ResultClaim:
    """What a peer with ``behaviour`` claims for one run at ``now`` (a lazy peer that cheats runs nothing)."""
    status, sha, fuel, message = true.status, true.output_sha256, true.fuel, true.message
    kind = behaviour.kind
    if behaviour.cheats(now) and rng.random() < behaviour.rate:
        base = job_id + index.to_bytes(8, "big")
        if kind == "wrong":
            status, sha, message = "ok", hashlib.sha256(b"wrong" + me.to_bytes() + base).digest(), ""
        elif kind == "colluder":
            status, sha, message = "ok", hashlib.sha256(b"collude" + behaviour.group.to_bytes(4, "big") + base).digest(), ""
        elif kind == "forger":
            fuel = fuel // 2 + 1
    size = OUTPUT_SIZE if status == "ok" else 0
    return ResultClaim(
        job_id=job_id, index=index, replica=replica, executor=me, status=status, output_sha256=sha,
        output_size=size, fuel_used=fuel, engine=ENGINE, message=message,
    )  # fmt: skip
