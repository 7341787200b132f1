"""Cross-verification of one subtask: when do distinct executors agree enough to accept?

Theory of operation:

Every executor that runs a replica signs a ``ResultClaim``. Two claims *agree*
when their ``status`` and ``output_sha256`` (and, for a ``task_error``, the
task's message) are equal (the agreement key) and, if both executors ran the
same ``engine``, their ``fuel_used`` too. Fuel is deterministic for one module,
input and engine, so a peer that skips the work and copies or guesses an output
cannot also match the fuel count; across engines fuel accounting may
legitimately differ, so there only the key is compared.
Timeouts are the exception: a run cut short by the wall clock stops at an
arbitrary fuel count, so fuel is never compared for ``timeout`` claims.

For one agreement key, the claims fall into groups by engine, and within an
engine by fuel. The *support* of the key is, summed over engines, the size of
the largest fuel group of that engine. An engine whose largest fuel groups are
tied contributes nothing: one of them is wrong, nobody can tell which, and
picking one would blame an honest peer. One more claim on that engine breaks the
tie, which is why such an engine still counts towards the hope of a quorum.

    verdict   condition                                                  final?
    --------  ---------------------------------------------------------  ------
    Verified  some key has support >= quorum (status "ok": an output;    yes
              any other status: a deterministic failure, not retried)
    Disputed  even the most promising key cannot reach quorum with the   yes
              executors still allowed (max_replicas minus those heard)
    Pending   otherwise; ``more`` is the fewest further claims that      no
              could reach quorum

Only distinct executors count: a second claim from an executor is ignored and
reported as a ``Duplicate``. Executors the caller names as untrusted (caught
disagreeing with a verified quorum before) are recorded, listed among the
candidates of a dispute and in the verdict's agreeing or disagreeing lists, but
never count towards support: they cannot help anything reach quorum. They still
use up one of the ``max_replicas`` executors, since they ran a replica.

``Tally`` keeps the claims of one subtask and latches the first final verdict:
claims are judged one at a time, so exactly one key can be the first to reach
quorum. ``judge`` itself is a pure function of the claims, in order, and the
untrusted set, so a restarted owner that replays both gets the same verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass

from .manifest import Replication
from .outcome import TASK_ERROR
from .peer_id import PeerId
from .result import ResultClaim

__all__ = ["Candidate", "Disputed", "Duplicate", "Pending", "Tally", "Verdict", "Verified", "judge"]

# Statuses whose fuel count says nothing: the run stopped on the wall clock, not in the program.
_FUEL_NOT_DETERMINISTIC = frozenset({"timeout"})
# Statuses that assert an answer of the task's own (an output, or its message refusing the input): a
# claim of one that a quorum contradicts is a disagreement; any other failure is only a failure.
_ASSERTS_ANSWER = frozenset({"ok", TASK_ERROR})

_Key = tuple[str, bytes | None, str]  # status, output hash, task_error message (ResultClaim.agreement_key)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One agreement key of a disputed subtask, and every executor that reported it."""

    status: str
    output_sha256: bytes | None
    executors: tuple[PeerId, ...]
    message: str = ""  # the task's message, for a task_error


@dataclass(frozen=True, slots=True)
class Verified:
    """A quorum of distinct, trusted executors agreed. Final.

    Attributes:
        status: "ok", or the failure code the quorum agreed on (the subtask then fails with it).
        output_sha256: the accepted output's hash; None for a failure.
        counted: the trusted executors whose agreement made the quorum (fetch the output from them).
        agreeing: everyone whose claim matches the verdict, ``counted`` included.
        disagreeing: claimed another output (or task_error message), or the same one with another
            fuel count on the same engine. Reputation bars these from quorums.
        failed: reported a failure code (other than task_error) the quorum did not; they forged
            nothing, they failed.
        unresolved: neither credited nor blamed: on an engine where equally many executors
            backed two fuel counts (one side is wrong, nothing says which), or anyone who
            differed from a quorum of timeouts (a timeout is not deterministic).
        fuel: the agreed fuel count per engine, a cost estimate for the job's other subtasks.
        message: for a ``task_error``, the task's message, which the quorum agreed on; else empty
            (other failures' messages are the host's wording, never compared).
    """

    status: str
    output_sha256: bytes | None
    counted: tuple[PeerId, ...]
    agreeing: tuple[PeerId, ...]
    disagreeing: tuple[PeerId, ...]
    failed: tuple[PeerId, ...]
    unresolved: tuple[PeerId, ...]
    fuel: tuple[tuple[str, int], ...]
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Disputed:
    """No key can reach quorum within ``max_replicas`` executors. Final.

    ``candidates`` are in the order their first claim arrived.
    """

    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    """Not decided yet: at least ``more`` further executors must report."""

    more: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The executor had already reported on this subtask; its new claim was ignored."""

    executor: PeerId


Verdict = Verified | Disputed | Pending


def _compares_fuel(claim: ResultClaim) -> bool:
    return claim.status not in _FUEL_NOT_DETERMINISTIC


@dataclass(slots=True)
class _KeyTally:
    """Support for one agreement key: per engine, how many trusted executors backed each fuel count."""

    by_engine: dict[str, Counter[int]]
    any_engine: int = 0  # trusted claims whose fuel is not compared (timeouts)

    def fuel(self) -> dict[str, int | None]:
        """The winning fuel count per engine, or None where the top two are tied."""
        out: dict[str, int | None] = {}
        for engine, counts in self.by_engine.items():
            top = counts.most_common(2)
            out[engine] = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None
        return out

    def support(self) -> tuple[int, int]:
        """(support, tie bonus): one further claim adds 1, or 1 + the tie bonus if it breaks the largest tie."""
        support, tie_bonus = self.any_engine, 0
        for counts in self.by_engine.values():
            top = counts.most_common(2)
            if len(top) == 1 or top[0][1] > top[1][1]:
                support += top[0][1]
            else:
                tie_bonus = max(tie_bonus, top[0][1])
        return support, tie_bonus


def judge(claims: Sequence[ResultClaim], replication: Replication, untrusted: Set[PeerId] = frozenset()) -> Verdict:
    """Decide one subtask from its claims.

    Args:
        claims: at most one claim per executor, in the order they arrived.
        replication: the job's ``quorum`` and ``max_replicas``.
        untrusted: executors whose claims must not count towards quorum.

    Returns:
        ``Verified``, ``Disputed``, or ``Pending`` with how many more claims are needed at least.
        If several keys reach quorum at once (only possible when claims are judged in
        bulk), the best supported wins, then the first to arrive.

    Raises:
        ValueError: two claims from one executor (use ``Tally`` to drop duplicates).
    """
    if len({c.executor for c in claims}) != len(claims):
        raise ValueError("judge() needs at most one claim per executor")
    quorum = replication.quorum
    keys: dict[_Key, _KeyTally] = {}
    for c in claims:
        tally = keys.setdefault(c.agreement_key(), _KeyTally({}))
        if c.executor in untrusted:
            continue
        if _compares_fuel(c):
            tally.by_engine.setdefault(c.engine, Counter())[c.fuel_used] += 1
        else:
            tally.any_engine += 1
    best: tuple[int, _Key] | None = None
    need = quorum  # a key nobody has reported yet could still gather a quorum
    for key, tally in keys.items():
        support, tie_bonus = tally.support()
        if support >= quorum and (best is None or support > best[0]):
            best = (support, key)
        need = min(need, max(1, quorum - support - tie_bonus))
    if best is not None:
        return _verified(best[1], keys[best[1]].fuel(), claims, untrusted)
    if need > replication.max_replicas - len(claims):
        return Disputed(_candidates(claims))
    return Pending(need)


def _verified(
    key: _Key, fuel: dict[str, int | None], claims: Iterable[ResultClaim], untrusted: Set[PeerId]
) -> Verified:
    counted: list[PeerId] = []
    agreeing: list[PeerId] = []
    disagreeing: list[PeerId] = []
    failed: list[PeerId] = []
    unresolved: list[PeerId] = []
    for c in claims:
        if c.agreement_key() != key:
            if key[0] in _FUEL_NOT_DETERMINISTIC:
                unresolved.append(c.executor)  # others timing out says nothing about a run that finished
            else:
                # Claiming an answer is the positive assertion a forger makes; a failure gives nothing to accept.
                (disagreeing if c.status in _ASSERTS_ANSWER else failed).append(c.executor)
            continue
        if not _compares_fuel(c) or c.engine not in fuel:
            matches: bool | None = True  # compared by key only
        else:
            expected = fuel[c.engine]
            matches = None if expected is None else expected == c.fuel_used
        if matches is None:
            unresolved.append(c.executor)
        elif not matches:
            disagreeing.append(c.executor)
        else:
            agreeing.append(c.executor)
            if c.executor not in untrusted:
                counted.append(c.executor)
    return Verified(
        status=key[0],
        output_sha256=key[1],
        counted=tuple(counted),
        agreeing=tuple(agreeing),
        disagreeing=tuple(disagreeing),
        failed=tuple(failed),
        unresolved=tuple(unresolved),
        fuel=tuple(sorted((e, f) for e, f in fuel.items() if f is not None)),
        message=key[2],
    )


def _candidates(claims: Iterable[ResultClaim]) -> tuple[Candidate, ...]:
    by_key: dict[_Key, list[PeerId]] = {}
    for c in claims:
        by_key.setdefault(c.agreement_key(), []).append(c.executor)
    return tuple(Candidate(status, sha, tuple(peers), message) for (status, sha, message), peers in by_key.items())


class Tally:
    """The claims for one subtask, one per executor, and its verdict once final.

    Args:
        job_id: the job the claims must be for.
        index: the subtask the claims must be for.
        replication: the job's replication policy.
    """

    __slots__ = ("_claims", "_final", "_untrusted_at_verdict", "index", "job_id", "replication")

    def __init__(self, job_id: bytes, index: int, replication: Replication) -> None:
        self.job_id = job_id
        self.index = index
        self.replication = replication
        self._claims: dict[PeerId, ResultClaim] = {}
        self._final: Verified | Disputed | None = None
        self._untrusted_at_verdict: frozenset[PeerId] = frozenset()

    def add(self, claim: ResultClaim, untrusted: Set[PeerId] = frozenset()) -> Verdict | Duplicate:
        """Record one claim and judge the subtask again.

        Once the verdict is final, claims are no longer recorded (the latched verdict
        is returned), so that what the tally holds is exactly what the verdict was
        reached on.

        Args:
            claim: a claim whose signature the caller has checked.
            untrusted: executors that must not count towards quorum, as of now.

        Returns:
            The verdict, or ``Duplicate`` if this executor had reported already.

        Raises:
            ValueError: the claim is for another job or subtask (a caller's bug).
        """
        if claim.job_id != self.job_id or claim.index != self.index:
            raise ValueError(f"claim for subtask {claim.index} given to the tally of subtask {self.index}")
        if self._final is not None:
            return self._final
        if claim.executor in self._claims:
            return Duplicate(claim.executor)
        self._claims[claim.executor] = claim
        verdict = judge(list(self._claims.values()), self.replication, untrusted)
        if not isinstance(verdict, Pending):
            self._final = verdict
            self._untrusted_at_verdict = frozenset(untrusted)
        return verdict

    def accept_alone(self) -> Verified:
        """Accept the one recorded claim on its executor's word (adaptive replication trusts it; ``adaptive.py``).

        Raises:
            ValueError: the verdict is already final, or the tally does not hold exactly one claim.
        """
        if self._final is not None or len(self._claims) != 1:
            raise ValueError(f"subtask {self.index}: only a single pending claim can be accepted alone")
        verdict = judge(self.claims, Replication(1, 1, 1))
        assert isinstance(verdict, Verified)  # one claim is a quorum of one
        self._final = verdict
        return verdict

    @property
    def claims(self) -> list[ResultClaim]:
        """The recorded claims, in arrival order."""
        return list(self._claims.values())

    @property
    def final(self) -> Verified | Disputed | None:
        return self._final

    @property
    def untrusted_at_verdict(self) -> frozenset[PeerId]:
        """The untrusted set the final verdict was reached with (to replay it after a restart)."""
        return self._untrusted_at_verdict

    def has_reported(self, executor: PeerId) -> bool:
        return executor in self._claims

    @classmethod
    def replay(
        cls,
        job_id: bytes,
        index: int,
        replication: Replication,
        claims: Iterable[ResultClaim],
        untrusted_at_verdict: Set[PeerId] | None,
    ) -> Tally:
        """Rebuild a tally from its recorded claims.

        Args:
            untrusted_at_verdict: the set the final verdict was reached with, or None if
                the subtask was still pending. Judging the same claims with the same set
                reproduces the same verdict.
        """
        tally = cls(job_id, index, replication)
        for claim in claims:
            if claim.executor in tally._claims or claim.job_id != job_id or claim.index != index:
                raise ValueError(f"replayed claims of subtask {index} are inconsistent")
            tally._claims[claim.executor] = claim
        if untrusted_at_verdict is not None:
            verdict = judge(tally.claims, replication, untrusted_at_verdict)
            if isinstance(verdict, Pending):
                raise ValueError(f"replayed claims of subtask {index} do not reach the recorded verdict")
            tally._final = verdict
            tally._untrusted_at_verdict = frozenset(untrusted_at_verdict)
        return tally
