"""The rules every simulated run must keep, checked as it runs; a broken one stops it with the seed and a trace.

Theory of operation:

The checker sees what the drivers carry out, as it happens, and keeps its own
record, independent of any state machine (which a crash throws away):

    rule                                            checked when
    ----------------------------------------------  -------------------------------------------------
    none decided twice (across restarts too)        a verdict is committed to a job's journal: the
                                                    subtask is undecided, or was reopened (adaptive
                                                    replication decides a subtask again once the one
                                                    executor it was accepted on is caught lying)
    no executor counted twice in a verdict          a Verified verdict is committed
    nothing accepted without the policy's evidence  a Verified verdict is committed: the mode's
                                                    evidence (``verification.py``), and every counted
                                                    executor really claimed that output and fuel
    credit never twice, never for a dispute, a      credit is granted with a committed verdict; and
    failure or a disagreeing executor               at the end, every grant still standing is for an
                                                    executor that agreed with its subtask's standing
                                                    verdict (a replacing verdict withdraws the old
                                                    one's grants)
    a restored owner knows every journalled verdict an owner is rebuilt after a crash
    no subtask lost, every job ends                 at the deadline, or when every job has ended:
                                                    each subtask of a job not cancelled is decided

The true result of each subtask is known here (``behaviour.truth``), so the
checker also counts the wrong results a verdict accepted, and those still
standing at the end: not a broken rule (colluders can legitimately gather a
quorum) but the figures the report gives.

A broken rule raises ``AssertionError`` with what broke, the seed and the
command that replays it, and the last events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence, Set
from typing import NoReturn

from ..core.credit import Grant
from ..core.job import Failed, Outcome
from ..core.owner import JobOwner
from ..core.peer_id import PeerId
from ..core.result import ResultClaim
from ..core.verify import Disputed, Verified
from .behaviour import Truth
from .clock import Clock
from .verification import Verification

__all__ = ["Checker"]

UNDECIDED, VERIFIED, FAILED, DISPUTED = 0, 1, 2, 3

_Key = tuple[str, bytes | None, str]


class Checker:
    """Keeps the record and checks the rules of one run.

    Args:
        clock: for the time and the trace of a failure.
        replay: the command line that replays this run.
        verification: the mode whose evidence a verdict must carry.
        truth: the true result of (job, index).
    """

    def __init__(self, clock: Clock, replay: str, verification: Verification, truth: Callable[[bytes, int], Truth]) -> None:
        self.clock = clock
        self.replay = replay
        self.verification = verification
        self.truth = truth
        self.journals: dict[bytes, bytearray] = {}  # per job, the kind of each standing verdict
        self.rechecking: dict[bytes, set[int]] = {}  # per job, the subtasks reopened and not decided again yet
        self.cancelled: set[bytes] = set()
        # every claim made for an undecided subtask, by executor (a byzantine peer that runs a replica
        # again after a crash may claim something else the second time)
        self.claims: dict[tuple[bytes, int], dict[PeerId, list[ResultClaim]]] = {}
        self.agreed: dict[tuple[bytes, int], frozenset[PeerId]] = {}  # the agreeing executors of standing verdicts
        self.wrong: set[tuple[bytes, int]] = set()  # standing verdicts that accepted a wrong result
        self.grants: dict[tuple[bytes, int], list[Grant]] = {}  # standing credit, by subtask
        self.streaks: dict[PeerId, Counter[PeerId]] = {}  # per owner: agreements with quorums since a disagreement
        self.credit = 0  # fuel granted, and not withdrawn
        self.kinds: Counter[str] = Counter()  # standing verdicts: verified, failed by its code, disputed
        self.how: dict[tuple[bytes, int], str] = {}  # how each standing Verified verdict was reached
        self.verified_by: Counter[str] = Counter()  # standing Verified verdicts: quorum, single+spotcheck, single
        self.wrong_accepted = 0  # every time a wrong result was accepted, replaced later or not
        self.first_lie: dict[PeerId, float] = {}  # when each executor first claimed other than the truth
        self.caught_at: dict[PeerId, float] = {}  # when a committed verdict first found it disagreeing
        self.checks = 0

    def fail(self, what: str) -> NoReturn:
        lines = [f"invariant broken: {what}", f"replay: {self.replay}",
                 f"at virtual time {self.clock.now:.6f} s; the last events:"]  # fmt: skip
        raise AssertionError("\n".join(lines + ["  " + line for line in self.clock.trace()]))

    # --- what happens -----------------------------------------------------------------------

    def job_started(self, job_id: bytes, subtasks: int) -> None:
        self.journals[job_id] = bytearray(subtasks)
        self.rechecking[job_id] = set()

    def claimed(self, claim: ResultClaim) -> None:
        """A peer made ``claim`` (whatever happens to it next)."""
        job_id, index = claim.job_id, claim.index
        if self.journals[job_id][index] == UNDECIDED or index in self.rechecking[job_id]:
            self.claims.setdefault((job_id, index), {}).setdefault(claim.executor, []).append(claim)
        if claim.executor not in self.first_lie:
            true = self.truth(job_id, index)
            if claim.agreement_key() != (true.status, true.output_sha256, true.message) or claim.fuel_used != true.fuel:
                self.first_lie[claim.executor] = self.clock.now

    def reopened(self, job_id: bytes, indices: Sequence[int]) -> None:
        """These verdicts are being decided again (their lone executor was caught lying)."""
        journal, rechecking = self.journals[job_id], self.rechecking[job_id]
        for index in indices:
            if journal[index] != VERIFIED:
                self.fail(f"subtask {index} of job {job_id.hex()[:8]} reopened, but it holds no verified output")
            rechecking.add(index)

    def committed(
        self, job_id: bytes, index: int, outcome: Outcome, untrusted: Set[PeerId], owner: PeerId,
        grants: Sequence[Grant], verified_by: str = "quorum", revised: bool = False,
    ) -> None:  # fmt: skip
        """A verdict, and the credit granted with it, went into the owner's journal."""
        self.checks += 1
        where = f"subtask {index} of job {job_id.hex()[:8]}"
        journal, rechecking = self.journals[job_id], self.rechecking[job_id]
        if journal[index] != UNDECIDED and index not in rechecking:
            self.fail(f"{where} decided twice")
        redecided = index in rechecking
        if revised and not redecided:
            self.fail(f"{where}: a verdict replaces one that was never reopened")
        rechecking.discard(index)
        key = (job_id, index)
        if redecided:
            self.kinds["verified"] -= 1  # only a verified output is ever reopened: its verdict is replaced
            self.verified_by[self.how.pop(key)] -= 1
        claims = self.claims.pop(key, {})
        if revised:  # the journal withdraws the replaced verdict's credit (no receipt covers it here)
            for g in self.grants.pop(key, []):
                self.credit -= g.fuel
        self.wrong.discard(key)
        self.agreed.pop(key, None)
        if isinstance(outcome, Verified):
            journal[index] = VERIFIED if outcome.ok else FAILED
            self.kinds["verified" if outcome.ok else outcome.status] += 1
            self._evidence(job_id, index, outcome, untrusted, claims, owner)
            self.agreed[key] = frozenset(outcome.agreeing)
            self.how[key] = verified_by
            self.verified_by[verified_by] += 1
            if verified_by == "single" and len(outcome.counted) != 1:
                self.fail(f"{where}: said to be verified by one executor, counted {len(outcome.counted)}")
        elif isinstance(outcome, Disputed):
            journal[index] = DISPUTED
            self.kinds["disputed"] += 1
        else:
            assert isinstance(outcome, Failed)
            journal[index] = FAILED
            self.kinds[outcome.code] += 1
        self._credit(job_id, index, outcome, owner, grants, redecided and not revised)

    def _evidence(
        self, job_id: bytes, index: int, v: Verified, untrusted: Set[PeerId], claims: dict[PeerId, list[ResultClaim]],
        owner: PeerId,
    ) -> None:  # fmt: skip
        where = f"subtask {index} of job {job_id.hex()[:8]}"
        streaks = self.streaks.setdefault(owner, Counter())
        problem = self.verification.missing(v, untrusted, streaks)
        if problem:
            self.fail(f"{where} accepted without the evidence of {self.verification.name} verification: {problem}")
        if set(v.agreeing) & set(v.disagreeing):
            self.fail(f"{where}: an executor both agrees and disagrees")
        fuel = dict(v.fuel)
        key: _Key = (v.status, v.output_sha256, v.message)
        for peer in v.counted:
            if not any(c.agreement_key() == key and fuel.get(c.engine, c.fuel_used) == c.fuel_used
                       for c in claims.get(peer, ())):  # fmt: skip
                self.fail(f"{where}: {str(peer)[-6:]} is counted for an output or fuel it never claimed")
        true = self.truth(job_id, index)
        if key != (true.status, true.output_sha256, true.message):
            self.wrong_accepted += 1
            self.wrong.add((job_id, index))
        if len(v.counted) >= 2:  # what earns trust (core/adaptive.py), counted here without decay
            for peer in v.agreeing:
                streaks[peer] += 1
        for peer in v.disagreeing:
            streaks[peer] = 0
            self.caught_at.setdefault(peer, self.clock.now)

    def _credit(
        self, job_id: bytes, index: int, outcome: Outcome, owner: PeerId, grants: Sequence[Grant], kept: bool
    ) -> None:  # fmt: skip
        """``kept``: a verdict decided again without saying it replaces one: the journal kept the old grants,
        and ignores a new grant to an executor it already holds one for (it is keyed by job, subtask, executor)."""
        where = f"subtask {index} of job {job_id.hex()[:8]}"
        if grants and not (isinstance(outcome, Verified) and outcome.ok):
            self.fail(f"{where}: credit granted for a verdict that is not a verified output: {type(outcome).__name__}")
        standing = self.grants.setdefault((job_id, index), [])
        for g in grants:
            assert isinstance(outcome, Verified)
            if any(s.executor == g.executor for s in standing):
                if kept:
                    continue
                self.fail(f"{where}: credit granted twice to {str(g.executor)[-6:]}")
            if g.executor == owner or g.executor not in outcome.agreeing or g.executor in outcome.disagreeing:
                self.fail(f"{where}: credit granted to {str(g.executor)[-6:]}, which did not agree (or owns the job)")
            if (g.job_id, g.index) != (job_id, index) or g.fuel != max(f for _, f in outcome.fuel):
                self.fail(f"{where}: a grant for another subtask, or for fuel nobody agreed on")
            standing.append(g)
            self.credit += g.fuel

    def restored(self, job_id: bytes, owner: JobOwner) -> None:
        """An owner was rebuilt after a crash: it must know every verdict its journal holds."""
        self.checks += 1
        journal, rechecking = self.journals[job_id], self.rechecking[job_id]
        for index, kind in enumerate(journal):
            if kind != UNDECIDED and index not in rechecking and owner.status(index) is None:
                self.fail(f"the restored owner of job {job_id.hex()[:8]} forgot the verdict on subtask {index}")
        if owner.finished != (self.undecided(job_id) == 0):
            self.fail(f"the restored owner of job {job_id.hex()[:8]} is finished={owner.finished} against its journal")

    def cancelled_job(self, job_id: bytes) -> None:
        self.cancelled.add(job_id)

    # --- the end ----------------------------------------------------------------------------

    def undecided(self, job_id: bytes) -> int:
        return self.journals[job_id].count(UNDECIDED) + len(self.rechecking[job_id])

    def ended(self, job_id: bytes) -> bool:
        return job_id in self.cancelled or self.undecided(job_id) == 0

    def finish(self, describe: Callable[[bytes], str]) -> None:
        """At the end: every job ended, with each subtask of a job not cancelled decided, and no credit
        standing for an executor that does not agree with its subtask's standing verdict.

        Args:
            describe: what the job's owner holds of a job that did not end (for the failure).
        """
        for job_id in self.journals:
            if not self.ended(job_id):
                self.fail(f"job {job_id.hex()[:8]} did not end: {self.undecided(job_id)} subtasks undecided "
                          f"({describe(job_id)})")  # fmt: skip
        for (job_id, index), standing in self.grants.items():
            agreed = self.agreed.get((job_id, index), frozenset())
            for g in standing:
                if g.executor not in agreed:
                    self.fail(f"subtask {index} of job {job_id.hex()[:8]}: credit stands for {str(g.executor)[-6:]}, "
                              "which does not agree with the verdict that stands")  # fmt: skip
