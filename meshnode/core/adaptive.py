"""Adaptive replication: one run for a subtask whose executor has earned this owner's trust, spot-checked at random.

Theory of operation:

*Trust is earned on this owner, and only by agreeing with others.* A
``TrustBook`` keeps, per executor, its *streak*: how many of its results agreed
with a verified quorum of at least two executors since it last disagreed with
one, and the fuel of that work. A result accepted on one executor's word proves
nothing about it and earns no streak. Both figures decay with the owner's time,
halving every ``half_life`` seconds, so a peer back after a long absence earns
its trust again; any disagreement with a verified quorum resets both to zero.

*Who runs alone.* An executor may decide a subtask alone when its streak is at
least ``min_streak`` and the fuel of its streak is at least ``min_streak`` times
the fuel one subtask of the job costs: trust earned on cheap work does not buy
an expensive subtask. (BOINC trusts a host after 10 consecutive valid results of
an app version; ``min_streak`` is 10.) A subtask granted to an executor that is
not trusted gets a second replica at once and is decided by a quorum of two.

*Spot checks.* When a trusted executor's result is in, the owner draws: with
probability ``p = max(floor, 1 / streak)`` a second, independent executor runs
the subtask too and the two must agree. The draw is made after the result
arrives and is never sent to anyone, so an executor cannot know which of its
results will be checked. A check that agrees raises both executors' streaks.

*Cost.* On an honest mesh after warm-up, a subtask costs ``1 + p`` runs:
at most ``1 + 1/min_streak`` = 1.1, and ``1 + floor`` = 1.05 once streaks pass
``1/floor`` = 20. Warm-up costs 2 runs per subtask until an executor has agreed
``min_streak`` times.

*The bound on wrong results.* Say a trusted executor returns a wrong output for
a fraction ``c`` of the subtasks it runs alone. Each wrong result is checked with
probability at least ``floor``, so the wrong results it gets accepted before the
first check catches it are geometric: ``(1 - p) / p`` expected, at most
``(1 - floor) / floor`` = 19, and more than ``k`` with probability at most
``(1 - floor) ** k`` (0.6 % for k = 100). It is caught after about
``1 / (c * p)`` single results, and then loses all trust. Whatever it alone vouched
for in the owner's running jobs is run again by others and replaced if wrong
(``JobOwner``'s ``Reopen``), so only results of jobs that finished before the
catch can stay wrong, and those are listed. Colluders that report the same wrong
output pass a check exactly when the checker is one of them, as they would pass
a fixed quorum made of them.

Nothing here reads a clock or a random source: time and draws are arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..errors import WireError
from .peer_id import PeerId
from .verify import Verified

__all__ = ["AdaptivePolicy", "TrustBook"]

_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    """Every parameter of adaptive replication, in one place (docs/design.md derives the figures)."""

    min_streak: int = 10  # agreements before an executor may run a subtask alone
    floor: float = 0.05  # the lowest probability of a spot check
    half_life: float = 86400.0  # seconds in which an idle streak halves

    def check_probability(self, streak: float) -> float:
        """The probability that a trusted executor's single result is checked."""
        return max(self.floor, 1.0 / max(streak, 1.0))

    def expected_runs(self, streak: float) -> float:
        """Runs per subtask for an executor with this streak: 2 before it is trusted, ``1 + p`` after."""
        return 1.0 + (self.check_probability(streak) if streak >= self.min_streak else 1.0)


@dataclass(slots=True)
class _Streak:
    count: float = 0.0
    fuel: float = 0.0
    at: float = 0.0  # when both were last brought up to date


class TrustBook:
    """What this owner has seen each executor agree on: who may run a subtask alone, and how often to check it.

    One book serves every job of an owner. The driver feeds it every verdict
    (``record_verdict``); the job owners read it (``trusted``, ``check_probability``).
    """

    __slots__ = ("_streaks", "policy")

    def __init__(self, policy: AdaptivePolicy = AdaptivePolicy()) -> None:
        self.policy = policy
        self._streaks: dict[PeerId, _Streak] = {}

    def _decayed(self, peer: PeerId, now: float) -> _Streak:
        s = self._streaks.get(peer)
        if s is None:
            return _Streak(at=now)
        if now > s.at:
            factor = 0.5 ** ((now - s.at) / self.policy.half_life)
            return _Streak(s.count * factor, s.fuel * factor, now)
        return _Streak(s.count, s.fuel, s.at)

    # --- events ------------------------------------------------------------------------

    def record_verdict(self, verdict: Verified, now: float) -> list[PeerId]:
        """Raise the streak of every executor a quorum of two or more agreed with; reset those it caught.

        Returns:
            The executors caught disagreeing, whose trust is now zero: whatever they alone vouched
            for must be checked again.
        """
        if len(verdict.counted) >= 2:
            fuel = max((f for _, f in verdict.fuel), default=0)
            for peer in verdict.agreeing:
                s = self._decayed(peer, now)
                self._streaks[peer] = _Streak(s.count + 1, s.fuel + fuel, now)
        for peer in verdict.disagreeing:
            self._streaks[peer] = _Streak(at=now)
        return list(verdict.disagreeing)

    # --- queries -----------------------------------------------------------------------

    def streak(self, peer: PeerId, now: float) -> float:
        return self._decayed(peer, now).count

    def trusted(self, peer: PeerId, fuel_per_subtask: float, now: float) -> bool:
        """Whether ``peer`` may decide a subtask that costs about ``fuel_per_subtask`` alone."""
        s = self._decayed(peer, now)
        need = self.policy.min_streak
        return s.count >= need and s.fuel >= need * fuel_per_subtask

    def check_probability(self, peer: PeerId, now: float) -> float:
        return self.policy.check_probability(self.streak(peer, now))

    # --- persistence -------------------------------------------------------------------

    def to_dict(self, now: float) -> dict[str, object]:
        """A JSON-compatible dict; ages are relative to ``now``, so any clock can read it back."""
        return {
            "format": _FORMAT,
            "peers": {
                str(p): [s.count, s.fuel, max(0.0, now - s.at)]
                for p, s in sorted(self._streaks.items(), key=lambda item: item[0].to_bytes())
                if s.count > 0
            },
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, object], now: float, *, away: float = 0.0, policy: AdaptivePolicy = AdaptivePolicy()
    ) -> TrustBook:
        """Rebuild from ``to_dict``'s output, ``away`` seconds after it was written (decay goes on meanwhile).

        Raises:
            ValueError: not a dict ``to_dict`` wrote. The caller logs it and starts with no trust.
        """
        if data.get("format") != _FORMAT or not isinstance(data.get("peers"), Mapping):
            raise ValueError("not a trust book this version can read")
        book = cls(policy)
        peers = data["peers"]
        assert isinstance(peers, Mapping)
        for text, entry in peers.items():
            try:
                peer = PeerId.from_base58(str(text))
            except WireError as exc:
                raise ValueError(f"trust book: {exc}") from None
            if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, int | float) for x in entry)):
                raise ValueError(f"trust book: the entry of {text} is not [streak, fuel, age]")
            count, fuel, age = (float(x) for x in entry)
            if not all(math.isfinite(x) and x >= 0 for x in (count, fuel, age)):
                raise ValueError(f"trust book: the entry of {text} has a negative or infinite figure")
            book._streaks[peer] = _Streak(count, fuel, now - age - max(0.0, away))
        return book
