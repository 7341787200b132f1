"""Adaptive replication (adaptive.py, and owner.py with a trust book): who runs alone, spot checks, repair.

Example tests pin each rule; ``AdaptiveMachine`` drives random interleavings of
honest executors and a trusted cheater against one owner, with random draws,
and checks that nothing is accepted without the policy's evidence and that
every wrong result the cheater got accepted is replaced once it is caught.
"""

from __future__ import annotations

import json
from collections import Counter
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshnode.core.adaptive import AdaptivePolicy, TrustBook
from meshnode.core.job import (
    Ack, ClaimReceived, Grant, Instruction, RenewLeases, Reopen, Reopened, ReplicaRef, ReplicasAdded, StealRequest,
    SubtaskDecided,
)  # fmt: skip
from meshnode.core.manifest import Replication
from meshnode.core.owner import JobOwner
from meshnode.core.peer_id import PeerId
from meshnode.core.result import ResultClaim
from meshnode.core.verify import Verified

from .test_owner import BAD, EVIL, H1, H2, H3, JOB, LEASE, OWNER, R, fuel, make_claim, of, truth

POLICY = Replication(replicas=1, quorum=2, max_replicas=3)
DAY = 86400.0


def ok_claim(peer: PeerId, ref: ReplicaRef, *, wrong: bool = False) -> ResultClaim:
    """An "ok" result (``truth`` traps every third subtask; adaptive tests want outputs only)."""
    sha = EVIL if wrong else truth(3 * ref.index)[1]
    return make_claim(peer, ref, "ok", sha, fuel(3 * ref.index, "e1" if peer in (OWNER, H2) else "e2"))


def quorum_verdict(*agreeing: PeerId, disagreeing: tuple[PeerId, ...] = (), fuel_used: int = 100) -> Verified:
    return Verified("ok", b"h" * 32, agreeing, agreeing, disagreeing, (), (), (("e1", fuel_used),))


def book_trusting(*peers: PeerId, streak: int = 11, fuel_used: int = 10**6) -> TrustBook:
    book = TrustBook()
    for _ in range(streak):
        for p in peers:
            book.record_verdict(quorum_verdict(p, OWNER, fuel_used=fuel_used), 0.0)
    return book


def adaptive_job(book: TrustBook, draws: list[float], n: int = 4) -> JobOwner:
    return JobOwner(JOB, OWNER, POLICY, n, lease_seconds=LEASE, trust=book, draw=lambda: draws.pop(0))


def decided(out: list[Instruction]) -> SubtaskDecided:
    (d,) = of(out, SubtaskDecided)
    assert isinstance(d, SubtaskDecided)
    return d


# --- the trust book ---------------------------------------------------------------------------


def test_only_agreement_with_a_quorum_of_two_raises_a_streak_and_one_disagreement_resets_it() -> None:
    book = TrustBook()
    book.record_verdict(Verified("ok", b"h" * 32, (H1,), (H1,), (), (), (), (("e1", 5),)), 0.0)
    assert book.streak(H1, 0.0) == 0  # a result on one executor's word proves nothing about it
    for _ in range(10):
        book.record_verdict(quorum_verdict(H1, H2), 0.0)
    assert book.streak(H1, 0.0) == 10 and book.trusted(H1, 100, 0.0)
    assert not book.trusted(H1, 101, 0.0)  # its streak's fuel is 10 x 100: not enough for a dearer subtask
    caught = book.record_verdict(quorum_verdict(H2, H3, disagreeing=(H1,)), 1.0)
    assert caught == [H1] and book.streak(H1, 1.0) == 0 and not book.trusted(H1, 0, 1.0)


def test_a_streak_halves_every_half_life_and_survives_a_restart_with_its_age() -> None:
    book = book_trusting(H1, streak=20)
    assert book.streak(H1, DAY) == pytest.approx(10) and book.trusted(H1, 0, DAY)
    assert not book.trusted(H1, 0, DAY + 1)
    saved = json.loads(json.dumps(book.to_dict(DAY / 2)))
    back = TrustBook.from_dict(saved, 5000.0, away=DAY / 2)  # another clock, and half a day switched off
    assert back.streak(H1, 5000.0) == pytest.approx(10)


@pytest.mark.parametrize("damaged", [
    {"format": 2, "peers": {}}, {"format": 1, "peers": []}, {"format": 1, "peers": {"nope": [1, 1, 1]}},
    {"format": 1, "peers": {str(H1): [1, 1]}}, {"format": 1, "peers": {str(H1): [1, -1, 0]}},
    {"format": 1, "peers": {str(H1): [math.nan, 1, 0]}}, {"format": 1, "peers": {str(H1): ["1", 1, 0]}},
])  # fmt: skip
def test_a_damaged_trust_book_is_refused(damaged: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrustBook.from_dict(damaged, 0.0)


@given(st.floats(0, 1000))
def test_the_check_probability_never_falls_below_the_floor_and_the_cost_is_bounded(streak: float) -> None:
    policy = AdaptivePolicy()
    assert policy.floor <= policy.check_probability(streak) <= 1
    if streak >= policy.min_streak:
        assert policy.expected_runs(streak) <= 1 + 1 / policy.min_streak
    else:
        assert policy.expected_runs(streak) == 2


# --- the owner with a trust book ---------------------------------------------------------------


def test_an_untrusted_executor_gets_a_second_replica_at_once_and_a_quorum_decides() -> None:
    job = adaptive_job(TrustBook(), [])
    out = job.handle(StealRequest(H1, 1, 1, 0.0))
    assert out == [Grant(H1, 1, (R(0, 0),), LEASE), ReplicasAdded((R(0, 1),), "untrusted")]
    job.handle(StealRequest(H2, 1, 1, 0.0))
    job.handle(ClaimReceived(ok_claim(H1, R(0, 0)), 1.0))
    d = decided(job.handle(ClaimReceived(ok_claim(H2, R(0, 1)), 1.0)))
    assert d.verified_by == "quorum" and isinstance(d.outcome, Verified) and set(d.outcome.counted) == {H1, H2}


def test_a_trusted_executor_runs_alone_and_its_result_is_accepted_unless_the_draw_checks_it() -> None:
    draws = [0.99, 0.01]  # p = 1/11 at a streak of 11: the first is not checked, the second is
    job = adaptive_job(book_trusting(H1), draws)
    assert job.handle(StealRequest(H1, 2, 1, 0.0)) == [Grant(H1, 1, (R(0, 0), R(1, 0)), LEASE)]
    d = decided(job.handle(ClaimReceived(ok_claim(H1, R(0, 0)), 1.0)))
    assert d.verified_by == "single" and isinstance(d.outcome, Verified) and d.outcome.counted == (H1,)
    out = job.handle(ClaimReceived(ok_claim(H1, R(1, 0)), 1.0))
    assert out[1:] == [ReplicasAdded((R(1, 1),), "spot_check")] and not draws
    job.handle(StealRequest(H2, 1, 1, 2.0))
    d = decided(job.handle(ClaimReceived(ok_claim(H2, R(1, 1)), 3.0)))
    assert d.verified_by == "single+spotcheck" and set(d.outcome.counted) == {H1, H2}  # type: ignore[union-attr]


def test_a_failure_or_an_executor_no_longer_trusted_is_never_accepted_alone() -> None:
    book = book_trusting(H1)
    job = adaptive_job(book, [0.99] * 4)
    job.handle(StealRequest(H1, 2, 1, 0.0))
    out = job.handle(ClaimReceived(make_claim(H1, R(0, 0), "task_error", None, 5), 1.0))
    assert out[1:] == [ReplicasAdded((R(0, 1),), "untrusted")]  # a failure alone proves nothing
    book.record_verdict(quorum_verdict(H2, H3, disagreeing=(H1,)), 1.0)  # caught lying elsewhere meanwhile
    out = job.handle(ClaimReceived(ok_claim(H1, R(1, 0)), 2.0))
    assert out[1:] == [ReplicasAdded((R(1, 1),), "untrusted")]


def test_a_caught_executors_lone_results_are_decided_again_without_it_and_replaced() -> None:
    job = adaptive_job(book_trusting(BAD, H1), [0.99, 0.99])
    job.handle(StealRequest(BAD, 2, 1, 0.0))
    job.handle(ClaimReceived(ok_claim(BAD, R(0, 0), wrong=True), 1.0))
    out = job.handle(ClaimReceived(ok_claim(BAD, R(1, 0)), 1.0))
    assert job.finished is False and job.progress().verified == 2
    out = job.handle(Reopen(BAD, (0, 1, 3), 2.0))  # subtask 3 was never decided: left alone
    assert out == [Reopened((0, 1), BAD)] and job.progress().verified == 0
    assert job.handle(StealRequest(BAD, 4, 2, 2.0))[0].replicas == (R(2, 0), R(3, 0))  # type: ignore[union-attr]
    refused = job.handle(ClaimReceived(ok_claim(BAD, R(0, 0)), 2.0))
    assert refused == [Ack(BAD, R(0, 0), "rejected", "this replica was never granted to this executor")]
    job.handle(StealRequest(H1, 2, 1, 3.0))
    job.handle(StealRequest(H2, 2, 1, 3.0))
    verdicts = []
    for peer in (H1, H2):
        for index in (0, 1):
            verdicts += of(job.handle(ClaimReceived(ok_claim(peer, R(index, 0 if peer == H1 else 1)), 4.0)), SubtaskDecided)
    assert [(d.index, d.verified_by, d.revised) for d in verdicts] == [(0, "quorum", True), (1, "quorum", True)]  # type: ignore[attr-defined]
    assert verdicts[0].outcome.output_sha256 == truth(0)[1]  # type: ignore[attr-defined]


def test_an_adaptive_job_survives_a_restart_with_its_lone_and_checked_subtasks() -> None:
    book = book_trusting(H1)
    job = adaptive_job(book, [0.01])
    job.handle(StealRequest(H1, 2, 1, 0.0))
    job.handle(ClaimReceived(ok_claim(H1, R(0, 0)), 1.0))  # drew a check: replica 1 queued
    saved = json.loads(json.dumps(job.snapshot()))
    with pytest.raises(ValueError, match="trust book"):
        JobOwner.restore(saved)
    back = JobOwner.restore(saved, [], trust=book, draw=[0.99].pop)
    back.handle(StealRequest(H2, 1, 1, 2.0))
    d = decided(back.handle(ClaimReceived(ok_claim(H2, R(0, 1)), 3.0)))
    assert d.verified_by == "single+spotcheck"
    back.handle(RenewLeases(H1, (R(1, 0),), 3.0))  # its lease went back to the queue; it is still bound
    assert decided(back.handle(ClaimReceived(ok_claim(H1, R(1, 0)), 3.0))).verified_by == "single"


def test_adaptive_replication_needs_a_quorum_and_a_random_source() -> None:
    with pytest.raises(ValueError):
        JobOwner(JOB, OWNER, Replication(1, 1, 1), 1, trust=TrustBook(), draw=random.random)
    with pytest.raises(ValueError):
        JobOwner(JOB, OWNER, POLICY, 1, trust=TrustBook())


# --- random interleavings -------------------------------------------------------------------


class AdaptiveMachine(RuleBasedStateMachine):
    """Honest executors H1..H3 and a cheater that earns trust, then lies at a rate; the driver's part is modelled
    as the node does it: every verdict feeds the trust book, and a caught executor's lone results are reopened."""

    @initialize(seed=st.integers(0, 2**32), n=st.integers(1, 12), streak=st.sampled_from([0, 10, 30]))
    def start(self, seed: int, n: int, streak: int) -> None:
        self.rng = random.Random(seed)
        self.book = book_trusting(H1, H2, H3, BAD, streak=streak, fuel_used=1) if streak else TrustBook()
        self.job = JobOwner(JOB, OWNER, POLICY, n, lease_seconds=LEASE, trust=self.book, draw=self.rng.random)
        self.n, self.now = n, 0.0
        self.held: dict[PeerId, set[ReplicaRef]] = {p: set() for p in (H1, H2, H3, BAD)}
        self.rid = dict.fromkeys(self.held, 0)
        self.final: dict[int, SubtaskDecided] = {}
        self.alone: dict[int, PeerId] = {}  # subtasks decided on one executor's word, and whose
        self.wrong_alone: set[int] = set()  # ... of which the cheater's wrong ones
        self.caught = False

    def apply(self, out: list[Instruction]) -> None:
        for i in out:
            if isinstance(i, Grant):
                self.held[i.thief] |= set(i.replicas)
            elif isinstance(i, SubtaskDecided):
                assert (i.index in self.final) == i.revised, "decided twice, or revised what was never decided"
                self.final[i.index] = i
                self.alone.pop(i.index, None)
                v = i.outcome
                if isinstance(v, Verified):
                    if i.verified_by == "single":
                        (who,) = v.counted
                        self.alone[i.index] = who
                        if v.output_sha256 != truth(3 * i.index)[1]:
                            assert who == BAD
                            self.wrong_alone.add(i.index)
                    else:  # two honest executors outvote the cheater: a quorum is always right here
                        assert len(v.counted) >= 2 and v.output_sha256 == truth(3 * i.index)[1]
                        self.wrong_alone.discard(i.index)
                    if self.book.record_verdict(v, self.now):
                        self.caught = True
                        bad = tuple(k for k, who in self.alone.items() if who == BAD)
                        self.apply(self.job.handle(Reopen(BAD, bad, self.now)))

    def claim(self, peer: PeerId, ref: ReplicaRef, wrong: bool) -> None:
        self.held[peer].discard(ref)
        self.apply(self.job.handle(ClaimReceived(ok_claim(peer, ref, wrong=wrong), self.now)))

    @rule(peer=st.sampled_from([H1, H2, H3, BAD]), k=st.integers(1, 3))
    def steal(self, peer: PeerId, k: int) -> None:
        self.rid[peer] += 1
        self.apply(self.job.handle(StealRequest(peer, k, self.rid[peer], self.now)))

    @rule(peer=st.sampled_from([H1, H2, H3]))
    def honest_reports(self, peer: PeerId) -> None:
        for ref in sorted(self.held[peer]):
            self.claim(peer, ref, wrong=False)

    @rule(rate=st.sampled_from([0.0, 0.3, 1.0]))
    def cheater_reports(self, rate: float) -> None:
        for ref in sorted(self.held[BAD]):
            self.claim(BAD, ref, wrong=self.rng.random() < rate)

    @rule(dt=st.sampled_from([1.0, DAY]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def each_nodes_count_of_binding_subtasks_is_exact(self) -> None:
        if hasattr(self, "job"):  # the O(1) count _room_for reads, against a recount
            assert self.job._ahead == Counter(p for sub in self.job._open.values() for p in sub.bound)

    @invariant()
    def a_lone_result_came_from_an_executor_trusted_when_it_arrived(self) -> None:
        for index, who in self.alone.items():
            assert who in (H1, H2, H3, BAD) and self.final[index].verified_by == "single"

    def teardown(self) -> None:
        # drain with honest executors; whatever the cheater got through is wrong only while it is not caught
        for _ in range(10 * self.n + 10):
            if self.job.finished:
                break
            for peer in (H1, H2, H3):
                self.steal(peer, 3)
                self.honest_reports(peer)
            self.cheater_reports(0.0)  # it answers what it holds, or the drain waits for its leases
        assert self.job.finished and len(self.final) == self.n
        assert not self.caught or not self.wrong_alone, "a caught cheater's wrong result was not replaced"


TestAdaptiveMachine = AdaptiveMachine.TestCase
TestAdaptiveMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
