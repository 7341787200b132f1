"""How a simulated job verifies its subtasks: the owner it builds, and the evidence a verdict must carry.

Theory of operation:

The simulator runs whatever verification the core offers, chosen by name:

    mode      the owner                                  a Verified verdict needs
    --------  -----------------------------------------  ------------------------------------------
    fixed     ``JobOwner`` with ``Replication(replicas,  at least ``quorum`` distinct counted
              quorum, max_replicas)``                    executors, none of them barred
    adaptive  the same, given the owner node's           the same; or, accepted on one executor's
              ``TrustBook`` and its random source        word ("single"): an output, from an
              (``core/adaptive.py``)                     executor not barred that agreed with
                                                         verified quorums ``min_streak`` times
                                                         since it last disagreed with one

``Verification`` is the seam: it builds a job's owner, rebuilds it after a crash
from the last snapshot and the journalled verdicts (as ``node/owning.py`` does),
and says what a verdict lacks (``missing``), for the invariant checker.

The checker counts streaks itself, from the verdicts it sees committed, without
decay and without forgetting at a crash, so its count is never below the trust
book's: an executor the book trusts has at least ``min_streak`` in it. A lone
verdict from one with fewer was accepted without the policy's evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any, Protocol

from ..core.adaptive import AdaptivePolicy, TrustBook
from ..core.manifest import Replication
from ..core.owner import JobOwner
from ..core.peer_id import PeerId
from ..core.verify import Verified
from .scenario import Scenario

__all__ = ["AdaptiveReplication", "FixedReplication", "Verification", "verification_for"]

Draw = Callable[[], float]


class Verification(Protocol):
    name: str

    def owner(
        self, job_id: bytes, owner: PeerId, subtasks: int, lease_seconds: float, max_attempts: int, max_hold: float,
        trust: TrustBook, draw: Draw,
    ) -> JobOwner:  # fmt: skip
        """A new job's state machine (``trust`` and ``draw`` are the owner node's)."""
        ...

    def restore(
        self, snapshot: Mapping[str, Any], journalled: Iterable[tuple[int, str]], trust: TrustBook, draw: Draw
    ) -> JobOwner:
        """The state machine of a job whose owner crashed, from what its journal holds."""
        ...

    def missing(self, verdict: Verified, untrusted: Set[PeerId], streaks: Mapping[PeerId, int]) -> str | None:
        """What the verdict lacks of this mode's evidence, or None.

        Args:
            untrusted: the executors barred when the verdict was reached.
            streaks: each executor's agreements with verified quorums since it last disagreed, on this owner.
        """
        ...


def _quorum_missing(verdict: Verified, untrusted: Set[PeerId], quorum: int) -> str | None:
    counted = verdict.counted
    if len(set(counted)) != len(counted):
        return f"an executor is counted twice: {[str(p)[-6:] for p in counted]}"
    if len(counted) < quorum:
        return f"{len(counted)} counted executors, quorum {quorum}"
    barred = [p for p in counted if p in untrusted]
    if barred:
        return f"barred executors counted: {[str(p)[-6:] for p in barred]}"
    return None


class FixedReplication:
    """``replicas`` runs of every subtask, accepted when ``quorum`` distinct trusted executors agree."""

    name = "fixed"

    def __init__(self, replication: Replication) -> None:
        self.replication = replication

    def owner(
        self, job_id: bytes, owner: PeerId, subtasks: int, lease_seconds: float, max_attempts: int, max_hold: float,
        trust: TrustBook, draw: Draw,
    ) -> JobOwner:  # fmt: skip
        return JobOwner(job_id, owner, self.replication, subtasks, lease_seconds=lease_seconds, max_attempts=max_attempts,
                        max_hold=max_hold)  # fmt: skip

    def restore(
        self, snapshot: Mapping[str, Any], journalled: Iterable[tuple[int, str]], trust: TrustBook, draw: Draw
    ) -> JobOwner:
        return JobOwner.restore(snapshot, journalled)

    def missing(self, verdict: Verified, untrusted: Set[PeerId], streaks: Mapping[PeerId, int]) -> str | None:
        return _quorum_missing(verdict, untrusted, self.replication.quorum)


class AdaptiveReplication:
    """One run for an executor that earned the owner's trust, spot-checked; a quorum otherwise (``core/adaptive.py``)."""

    name = "adaptive"

    def __init__(self, replication: Replication, policy: AdaptivePolicy) -> None:
        self.replication, self.policy = replication, policy

    def owner(
        self, job_id: bytes, owner: PeerId, subtasks: int, lease_seconds: float, max_attempts: int, max_hold: float,
        trust: TrustBook, draw: Draw,
    ) -> JobOwner:  # fmt: skip
        return JobOwner(job_id, owner, self.replication, subtasks, lease_seconds=lease_seconds,
                        max_attempts=max_attempts, max_hold=max_hold, trust=trust, draw=draw)  # fmt: skip

    def restore(
        self, snapshot: Mapping[str, Any], journalled: Iterable[tuple[int, str]], trust: TrustBook, draw: Draw
    ) -> JobOwner:
        return JobOwner.restore(snapshot, journalled, trust=trust, draw=draw)

    def missing(self, verdict: Verified, untrusted: Set[PeerId], streaks: Mapping[PeerId, int]) -> str | None:
        if len(verdict.counted) != 1:
            return _quorum_missing(verdict, untrusted, self.replication.quorum)
        (alone,) = verdict.counted
        if not verdict.ok:
            return f"a {verdict.status} accepted on one executor's word"
        if alone in untrusted:
            return f"accepted on the word of {str(alone)[-6:]}, which is barred"
        if streaks.get(alone, 0) < self.policy.min_streak:
            return f"accepted on the word of {str(alone)[-6:]}, with a streak of {streaks.get(alone, 0)} agreements"
        return None


def verification_for(scenario: Scenario) -> Verification:
    """The verification a scenario names.

    Raises:
        ValueError: a mode the core does not offer, or a policy it refuses.
    """
    replication = Replication(scenario.replicas, scenario.quorum, scenario.max_replicas)
    if scenario.verify == "fixed":
        return FixedReplication(replication)
    if scenario.verify == "adaptive":
        if scenario.quorum < 2:
            raise ValueError("adaptive verification needs a quorum of 2 or more")
        return AdaptiveReplication(replication, AdaptivePolicy(min_streak=scenario.min_streak, floor=scenario.spot_floor))
    raise ValueError(f"verification {scenario.verify!r} is not in the core (only fixed and adaptive are)")
