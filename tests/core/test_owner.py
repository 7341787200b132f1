"""The owner's state machine for one job (owner.py, job.py): grants, leases, claims, verdicts, crashes.

Example tests pin each rule; ``JobMachine`` drives random interleavings of
steals, results (honest and byzantine), clock jumps, departures and owner
crashes, then drains the job with honest executors and checks that it ends.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
import hashlib
import json

import nacl.signing
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshnode.core.job import (
    LEASE_LAPSED,
    PEER_GONE,
    Ack,
    Cancel,
    ClaimReceived,
    Event,
    Failed,
    Grant,
    Instruction,
    JobFinished,
    Outcome,
    PeerLeft,
    Progress,
    ReleaseReplicas,
    RenewLeases,
    Renewed,
    ReplicaLost,
    ReplicaRef,
    ReplicasAdded,
    Revoke,
    StealRequest,
    SubtaskDecided,
    Tick,
    TransferReplicas,
    Transferred,
)
from meshnode.core.manifest import Replication
from meshnode.core.owner import MAX_AHEAD, JobOwner
from meshnode.core.peer_id import PeerId
from meshnode.core.reputation import Reputation
from meshnode.core.result import ResultClaim
from meshnode.core.verify import Disputed, Verified

JOB = b"J" * 16
IDS = [PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key)) for i in range(7)]
OWNER, H1, H2, H3, H4, H5, BAD = IDS
HONEST = [OWNER, H1, H2, H3, H4, H5]
ENGINE = {p: "e1" if i % 2 == 0 else "e2" for i, p in enumerate(IDS)}
EVIL = hashlib.sha256(b"forged").digest()
LEASE = 30.0
NOT_GRANTED = "this replica was never granted to this executor"
DECIDED = "the subtask is already decided"


def R(index: int, replica: int) -> ReplicaRef:
    return ReplicaRef(index, replica)


def truth(index: int) -> tuple[str, bytes | None]:
    """What honest executors report: every third subtask traps, deterministically."""
    return ("trap", None) if index % 3 == 2 else ("ok", hashlib.sha256(index.to_bytes(4, "big")).digest())


def fuel(index: int, engine: str) -> int:
    return 1000 + 10 * index + (0 if engine == "e1" else 3)  # engines count fuel differently


def honest(peer: PeerId, ref: ReplicaRef, *, timeout: bool = False) -> ResultClaim:
    status, sha = ("timeout", None) if timeout else truth(ref.index)
    f = 77 if timeout else fuel(ref.index, ENGINE[peer])
    return make_claim(peer, ref, status, sha, f)


def make_claim(peer: PeerId, ref: ReplicaRef, status: str, sha: bytes | None, f: int, job: bytes = JOB) -> ResultClaim:
    return ResultClaim(
        job_id=job, index=ref.index, replica=ref.replica, executor=peer, status=status, output_sha256=sha,
        output_size=0, fuel_used=f, engine=ENGINE[peer], message="it broke" if status != "ok" else "",
    )  # fmt: skip


def new_job(
    replicas: int = 2, quorum: int = 2, max_replicas: int = 3, n: int = 4, max_attempts: int = 3, **limits: int
) -> JobOwner:
    policy = Replication(replicas=replicas, quorum=quorum, max_replicas=max_replicas)
    return JobOwner(JOB, OWNER, policy, n, lease_seconds=LEASE, max_attempts=max_attempts, **limits)


def sized(claim: ResultClaim, size: int) -> ResultClaim:
    return dataclasses.replace(claim, output_size=size)


def status_of(outcome: Outcome) -> str:
    """The status a node journals for an outcome."""
    if isinstance(outcome, Disputed):
        return "disputed"
    return outcome.code if isinstance(outcome, Failed) else outcome.status


def of(out: list[Instruction], kind: type) -> list[Instruction]:
    return [i for i in out if isinstance(i, kind)]


def decision(out: list[Instruction]) -> Outcome:
    (decided,) = [i for i in out if isinstance(i, SubtaskDecided)]
    return decided.outcome


# --- examples ---------------------------------------------------------------------------------


def test_one_replica_quorum_one() -> None:
    job = new_job(1, 1, 1, n=2)
    assert job.handle(StealRequest(OWNER, 5, 1, 0.0)) == [Grant(OWNER, 1, (R(0, 0), R(1, 0)), LEASE)]
    out = job.handle(ClaimReceived(honest(OWNER, R(0, 0)), 1.0))
    assert out[0] == Ack(OWNER, R(0, 0), "accepted")
    assert isinstance(out[1], SubtaskDecided) and isinstance(out[1].outcome, Verified) and out[1].outcome.ok
    out = job.handle(ClaimReceived(honest(OWNER, R(1, 0)), 1.0))
    assert isinstance(out[-1], JobFinished) and job.finished
    assert out[-1].progress == Progress(total=2, verified=2, failed=0, disputed=0, running=0, queued=0)


def test_everyone_is_served_from_the_front_so_the_replicas_of_a_subtask_run_together() -> None:
    job = new_job(n=4)
    assert job.handle(StealRequest(H1, 3, 1, 0.0)) == [Grant(H1, 1, (R(0, 0), R(1, 0), R(2, 0)), LEASE)]
    assert job.handle(StealRequest(OWNER, 3, 1, 0.0)) == [Grant(OWNER, 1, (R(0, 1), R(1, 1), R(2, 1)), LEASE)]
    assert job.surplus() == 2 and job.progress().running == 3 and job.open_count() == 3


def test_replicas_of_each_subtask_are_granted_within_one_round_of_each_other() -> None:
    """Two nodes taking turns over a large job: every subtask's second replica follows its first at once."""
    n = 2000
    job = new_job(n=n)
    granted_in: dict[int, list[int]] = {}
    for turn in range(2 * n):
        peer = (OWNER, H1)[turn % 2]
        (grant,) = job.handle(StealRequest(peer, 7, turn + 1, float(turn)))
        assert isinstance(grant, Grant)
        for ref in grant.replicas:
            granted_in.setdefault(ref.index, []).append(turn)
            job.handle(ClaimReceived(honest(peer, ref), float(turn)))
        if job.finished:
            break
    assert job.finished and sorted(granted_in) == list(range(n))
    assert max(turns[1] - turns[0] for turns in granted_in.values()) <= 1
    assert job.open_count() == 0


def test_no_node_runs_more_than_max_ahead_subtasks_ahead_of_the_others() -> None:
    """A fast node (the owner's own slot, say) is given new subtasks until it is bound to MAX_AHEAD open ones."""
    job = new_job(n=3 * MAX_AHEAD)
    taken = 0
    while job.has_work_for(OWNER):
        (grant,) = job.handle(StealRequest(OWNER, 256, taken + 1, 0.0))
        assert isinstance(grant, Grant) and grant.replicas
        taken += len(grant.replicas)
    assert taken == MAX_AHEAD == job.open_count()  # and then nothing: it waits for the others
    assert job.handle(StealRequest(OWNER, 256, 999, 0.0)) == [Grant(OWNER, 999, (), LEASE)]
    assert job.held_back(OWNER) and not job.held_back(H1)  # held back, not out of work: a thief asks again soon
    # the slow node takes the second replicas, oldest first, however far behind it is
    (grant,) = job.handle(StealRequest(H1, 300, 1, 0.0))
    assert isinstance(grant, Grant) and [r.index for r in grant.replicas] == list(range(300))
    for ref in grant.replicas:  # both report: 300 verdicts, and the fast node may open 300 more
        job.handle(ClaimReceived(honest(H1, ref), 1.0))
        job.handle(ClaimReceived(honest(OWNER, R(ref.index, 0)), 1.0))
    p = job.progress()
    assert p.verified + p.failed + p.disputed == 300 and job.has_work_for(OWNER) and not job.held_back(OWNER)
    (grant,) = job.handle(StealRequest(OWNER, 1000, 1000, 2.0))
    assert isinstance(grant, Grant) and len(grant.replicas) == 300


def test_a_node_is_held_back_only_while_new_subtasks_are_left_for_when_the_others_catch_up() -> None:
    job = new_job(n=MAX_AHEAD)
    (grant,) = job.handle(StealRequest(OWNER, MAX_AHEAD, 1, 0.0))
    assert isinstance(grant, Grant) and len(grant.replicas) == MAX_AHEAD
    assert not job.held_back(OWNER)  # no subtask is left to open: waiting would bring it nothing new
    job = new_job(n=MAX_AHEAD + 1)
    job.handle(StealRequest(OWNER, MAX_AHEAD, 1, 0.0))
    assert job.held_back(OWNER)
    job.handle(Cancel(1.0))
    assert not job.held_back(OWNER)


def test_at_most_max_open_subtasks_are_in_flight() -> None:
    job = new_job(n=100, max_open=5)
    (grant,) = job.handle(StealRequest(OWNER, 50, 1, 0.0))
    assert isinstance(grant, Grant) and [r.index for r in grant.replicas] == [0, 1, 2, 3, 4]
    assert job.surplus() == 5  # only the second replicas of the open subtasks can be granted now
    assert job.progress().queued == 5 + 2 * 95
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(ClaimReceived(honest(OWNER, R(0, 0)), 1.0))
    job.handle(ClaimReceived(honest(H1, R(0, 1)), 1.0))  # subtask 0 decided: room for one more
    (grant,) = job.handle(StealRequest(H1, 50, 2, 2.0))
    assert isinstance(grant, Grant) and [r.index for r in grant.replicas] == [1, 2, 3, 4, 5]


def test_no_subtask_is_opened_while_the_candidate_outputs_held_exceed_the_limit() -> None:
    job = new_job(n=10, max_pending_bytes=1000)
    job.handle(StealRequest(H1, 2, 1, 0.0))
    for index in (0, 1):
        job.handle(ClaimReceived(sized(honest(H1, R(index, 0)), 600), 1.0))
    (grant,) = job.handle(StealRequest(H2, 5, 1, 2.0))
    assert isinstance(grant, Grant) and [r.index for r in grant.replicas] == [0, 1]  # nothing new
    job.handle(ClaimReceived(sized(honest(H2, R(0, 1)), 600), 3.0))  # agrees: decided, its output freed
    (grant,) = job.handle(StealRequest(H3, 5, 1, 4.0))
    assert isinstance(grant, Grant) and [r.index for r in grant.replicas] == [2, 3, 4, 5, 6]


def test_a_node_has_no_work_in_a_job_whose_every_open_replica_it_is_bound_away_from() -> None:
    """An impossible job (quorum 3 on a two-node mesh) must not keep its owner's slots from other work."""
    job = new_job(replicas=2, quorum=3, max_replicas=3, n=2)
    job.handle(StealRequest(OWNER, 10, 1, 0.0))
    job.handle(StealRequest(H1, 10, 1, 0.0))
    assert job.surplus() == 2  # the third replicas, which only a third node could run
    assert not job.has_work_for(OWNER) and not job.has_work_for(H1) and job.has_work_for(H2)
    assert new_job(n=1).has_work_for(OWNER)


def test_no_node_gets_two_replicas_of_one_subtask() -> None:
    job = new_job(replicas=3, max_replicas=3, n=2)
    (grant,) = job.handle(StealRequest(H1, 100, 1, 0.0))
    assert isinstance(grant, Grant) and sorted(r.index for r in grant.replicas) == [0, 1]
    assert job.handle(StealRequest(H1, 100, 2, 0.0)) == [Grant(H1, 2, (), LEASE)]


def test_a_lapsed_lease_requeues_and_attempts_run_out_with_the_last_error() -> None:
    job = new_job(n=1, max_attempts=2)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(StealRequest(H2, 1, 1, 5.0))
    assert job.handle(Tick(LEASE)) == [ReplicaLost(H1, R(0, 0), LEASE_LAPSED)]
    assert job.surplus() == 1
    out = job.handle(Tick(LEASE + 5.0))
    assert out[0] == ReplicaLost(H2, R(0, 1), LEASE_LAPSED)
    outcome = decision(out)
    assert isinstance(outcome, Failed) and outcome.code == LEASE_LAPSED
    assert job.finished and job.surplus() == 0 and job.status(0) == "failed"


def test_attempts_are_counted_per_distinct_node() -> None:
    job = new_job(n=1, max_attempts=2)
    for t in range(3):  # the same node lapsing again and again is one attempt
        job.handle(StealRequest(H1, 1, t + 1, 100.0 * t))
        assert of(job.handle(Tick(100.0 * t + LEASE)), SubtaskDecided) == []


def test_renewal_extends_the_lease_and_revives_a_lapsed_one_nobody_took() -> None:
    job = new_job(n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    assert job.handle(RenewLeases(H1, (R(0, 0),), 20.0)) == [Renewed(H1, (R(0, 0),), 20.0 + LEASE)]
    assert job.handle(Tick(LEASE + 1)) == []
    job.handle(Tick(20.0 + LEASE))
    assert job.surplus() == 2
    assert job.handle(RenewLeases(H1, (R(0, 0),), 60.0)) == [Renewed(H1, (R(0, 0),), 60.0 + LEASE)]
    assert job.surplus() == 1


def test_renewal_of_a_replica_taken_over_is_revoked() -> None:
    job = new_job(n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(StealRequest(H3, 1, 1, 0.0))  # replica 1
    job.handle(Tick(LEASE))
    job.handle(StealRequest(H2, 2, 1, LEASE))  # takes over replica 0, the only one it may have
    assert job.handle(RenewLeases(H1, (R(0, 0), R(9, 9)), LEASE + 1)) == [Revoke(H1, (R(0, 0), R(9, 9)), "lease lost")]


def test_claims_must_come_from_a_node_bound_to_that_replica_and_count_once() -> None:
    job = new_job(n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    assert job.handle(ClaimReceived(honest(H2, R(0, 1)), 1.0)) == [Ack(H2, R(0, 1), "rejected", NOT_GRANTED)]
    assert job.handle(ClaimReceived(honest(H1, R(0, 1)), 1.0)) == [Ack(H1, R(0, 1), "rejected", NOT_GRANTED)]
    other_job = make_claim(H1, R(0, 0), "ok", truth(0)[1], fuel(0, "e2"), job=b"X" * 16)
    assert job.handle(ClaimReceived(other_job, 1.0)) == [Ack(H1, R(0, 0), "rejected", NOT_GRANTED)]
    assert job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0)) == [Ack(H1, R(0, 0), "accepted")]
    assert job.handle(ClaimReceived(honest(H1, R(0, 0)), 2.0)) == [Ack(H1, R(0, 0), "duplicate")]


def test_a_replica_whose_lease_lapsed_is_left_to_its_holder_while_another_is_free() -> None:
    """The holder of a lapsed lease stays bound (it may still report): a newcomer takes a free replica instead.

    Otherwise two nodes would be bound to replica 0, and on a two-node mesh nobody could run replica 1.
    """
    job = new_job(n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))  # replica 0
    job.handle(Tick(LEASE))  # lapses: back in the queue, H1 still bound to it
    assert job.handle(StealRequest(OWNER, 2, 1, LEASE)) == [Grant(OWNER, 1, (R(0, 1),), 2 * LEASE)]
    assert job.handle(StealRequest(H1, 1, 2, LEASE)) == [Grant(H1, 2, (R(0, 0),), 2 * LEASE)]  # its own again
    job.handle(ClaimReceived(honest(OWNER, R(0, 1)), LEASE + 1))
    assert isinstance(job.handle(ClaimReceived(honest(H1, R(0, 0)), LEASE + 2))[-1], JobFinished)


def test_a_past_holder_that_kept_working_is_heard() -> None:
    job = new_job(n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(StealRequest(H3, 1, 1, 0.0))  # replica 1, never reported
    job.handle(Tick(LEASE))
    job.handle(StealRequest(H2, 2, 1, LEASE))  # takes over replica 0, the only one it may have
    out = job.handle(ClaimReceived(honest(H1, R(0, 0)), LEASE + 1))
    assert out == [Ack(H1, R(0, 0), "accepted"), Revoke(H2, (R(0, 0),), "a past holder reported it")]
    # H2 is bound to replica 0 and may have run it too: a distinct executor, so it counts
    out = job.handle(ClaimReceived(honest(H2, R(0, 0)), LEASE + 2))
    assert isinstance(out[-1], JobFinished)


def test_a_node_whose_replica_someone_else_reported_may_take_the_replica_added_next() -> None:
    """Three nodes, two replicas: OWNER's run timed out, H2's lease lapsed and H1 took its replica over, then
    H2 reported it after all. A third replica is needed, and H1, revoked, must be allowed to run it: bound
    for good to replica 0, as it was, it left nobody to run replica 2 and the job waited for ever (found in
    a three-node test whose owner restarted four times mid-job)."""
    job = new_job(replicas=2, quorum=2, max_replicas=3, n=1)
    job.handle(StealRequest(H2, 1, 1, 0.0))  # replica 0
    job.handle(StealRequest(OWNER, 1, 1, 0.0))  # replica 1
    job.handle(ClaimReceived(honest(OWNER, R(0, 1), timeout=True), 1.0))
    job.handle(Tick(LEASE))  # H2's lease lapses; it stays bound to replica 0
    assert job.handle(StealRequest(H1, 1, 1, LEASE)) == [Grant(H1, 1, (R(0, 0),), 2 * LEASE)]
    out = job.handle(ClaimReceived(honest(H2, R(0, 0)), LEASE + 1))
    assert out[1:] == [Revoke(H1, (R(0, 0),), "a past holder reported it"), ReplicasAdded((R(0, 2),))]
    assert not job.has_work_for(OWNER) and not job.has_work_for(H2)  # their results are in
    assert job.has_work_for(H1)
    assert job.handle(StealRequest(H1, 1, 2, LEASE + 2)) == [Grant(H1, 2, (R(0, 2),), 2 * LEASE + 2)]
    # a late claim on the replica it left is not counted; its claim on the new one decides the subtask
    late = job.handle(ClaimReceived(honest(H1, R(0, 0)), LEASE + 3))
    assert late == [Ack(H1, R(0, 0), "rejected", NOT_GRANTED)]
    assert isinstance(job.handle(ClaimReceived(honest(H1, R(0, 2)), LEASE + 4))[-1], JobFinished)


def test_a_node_whose_lapsed_replica_was_taken_over_may_take_another_of_the_subtask() -> None:
    """The owner restarted: its own run of replica 0 is gone, H1 took that replica over and reported a
    different output than H2. OWNER, bound to a replica it will never report, may run the third one."""
    job = new_job(replicas=2, quorum=2, max_replicas=3, n=1)
    job.handle(StealRequest(OWNER, 1, 1, 0.0))  # replica 0
    job.handle(StealRequest(H2, 1, 1, 0.0))  # replica 1
    job = JobOwner.restore(json.loads(json.dumps(job.snapshot())))  # the owner's own run died with it
    job.handle(RenewLeases(H2, (R(0, 1),), 1.0))  # H2 kept working
    assert job.handle(StealRequest(H1, 1, 1, 1.0)) == [Grant(H1, 1, (R(0, 0),), 1.0 + LEASE)]
    assert not job.has_work_for(OWNER)  # nothing is queued
    job.handle(ClaimReceived(honest(H2, R(0, 1)), 2.0))
    out = job.handle(ClaimReceived(honest(H1, R(0, 0), timeout=True), 3.0))
    assert out[1:] == [ReplicasAdded((R(0, 2),))]
    assert job.handle(StealRequest(OWNER, 1, 2, 4.0)) == [Grant(OWNER, 2, (R(0, 2),), 4.0 + LEASE)]
    assert isinstance(job.handle(ClaimReceived(honest(OWNER, R(0, 2)), 5.0))[-1], JobFinished)


def test_disagreement_adds_replicas_until_max_then_disputed() -> None:
    job = new_job(replicas=2, quorum=2, max_replicas=3, n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(StealRequest(BAD, 1, 1, 0.0))
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0))
    out = job.handle(ClaimReceived(make_claim(BAD, R(0, 1), "ok", EVIL, 1), 1.0))
    assert out[1:] == [ReplicasAdded((R(0, 2),))]
    job.handle(StealRequest(H2, 1, 1, 2.0))
    out = job.handle(ClaimReceived(make_claim(H2, R(0, 2), "ok", hashlib.sha256(b"x").digest(), 1), 3.0))
    outcome = decision(out)
    assert isinstance(outcome, Disputed)
    assert [c.executors for c in outcome.candidates] == [(H1,), (BAD,), (H2,)]
    assert job.progress().disputed == 1 and job.status(0) == "disputed"


def test_a_verdict_revokes_outstanding_replicas_and_late_claims_are_acknowledged() -> None:
    job = new_job(replicas=3, quorum=2, max_replicas=3, n=1)
    for i, p in enumerate((H1, H2, H3)):
        job.handle(StealRequest(p, 1, 1, float(i)))
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 5.0))
    out = job.handle(ClaimReceived(honest(H2, R(0, 1)), 5.0))
    assert out[1] == Revoke(H3, (R(0, 2),), "the subtask is decided")
    assert job.handle(ClaimReceived(honest(H3, R(0, 2)), 6.0)) == [Ack(H3, R(0, 2), "late", DECIDED)]
    assert job.surplus() == 0 and job.progress().running == 0 and job.open_count() == 0


def test_quorum_agreeing_on_a_failure_code_fails_the_subtask_for_good() -> None:
    job = new_job(n=3)
    job.handle(StealRequest(H1, 3, 1, 0.0))
    job.handle(StealRequest(H2, 3, 1, 0.0))
    job.handle(ClaimReceived(honest(H1, R(2, 0)), 1.0))
    out = job.handle(ClaimReceived(honest(H2, R(2, 1)), 1.0))
    outcome = decision(out)
    assert isinstance(outcome, Verified) and outcome.status == "trap"
    assert job.progress().failed == 1 and of(out, ReplicasAdded) == []


def test_fuel_mismatch_on_the_same_engine_needs_more_replicas_but_not_across_engines() -> None:
    job = new_job(replicas=2, quorum=2, max_replicas=4, n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))  # e2
    job.handle(StealRequest(H3, 1, 1, 0.0))  # e2
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0))
    wrong_fuel = make_claim(H3, R(0, 1), "ok", truth(0)[1], fuel(0, "e2") + 1)
    assert of(job.handle(ClaimReceived(wrong_fuel, 1.0)), ReplicasAdded) == [ReplicasAdded((R(0, 2),))]
    job.handle(StealRequest(H2, 1, 1, 2.0))  # e1: compared by hash only, but e2 is tied so counts nothing
    assert of(job.handle(ClaimReceived(honest(H2, R(0, 2)), 3.0)), ReplicasAdded) == [ReplicasAdded((R(0, 3),))]
    job.handle(StealRequest(H5, 1, 1, 4.0))  # a second honest e2 breaks the tie
    outcome = decision(job.handle(ClaimReceived(honest(H5, R(0, 3)), 5.0)))
    assert isinstance(outcome, Verified) and outcome.ok
    assert outcome.counted == (H1, H2, H5) and outcome.disagreeing == (H3,)


def test_different_engines_agree_on_the_hash_alone() -> None:
    job = new_job(n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))  # e2
    job.handle(StealRequest(H2, 1, 1, 0.0))  # e1
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0))
    outcome = decision(job.handle(ClaimReceived(honest(H2, R(0, 1)), 1.0)))
    assert isinstance(outcome, Verified) and outcome.fuel == (("e1", fuel(0, "e1")), ("e2", fuel(0, "e2")))


def test_untrusted_executors_do_not_count() -> None:
    job = new_job(replicas=2, quorum=2, max_replicas=3, n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(StealRequest(BAD, 1, 1, 0.0))
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0, frozenset({BAD})))
    out = job.handle(ClaimReceived(honest(BAD, R(0, 1)), 1.0, frozenset({BAD})))
    assert out[1:] == [ReplicasAdded((R(0, 2),))]


def test_a_departed_peer_loses_its_leases() -> None:
    job = new_job(n=2)
    job.handle(StealRequest(H1, 2, 1, 0.0))
    job.handle(StealRequest(H2, 1, 1, 0.0))
    assert job.handle(PeerLeft(H1, 1.0)) == [ReplicaLost(H1, R(0, 0), PEER_GONE), ReplicaLost(H1, R(1, 0), PEER_GONE)]
    assert job.surplus() == 3 and job.progress().running == 1


def test_released_replicas_go_back_without_an_attempt() -> None:
    job = new_job(n=1, max_attempts=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    assert job.handle(ReleaseReplicas(H1, (R(0, 1), R(0, 0)), 1.0)) == []
    assert job.surplus() == 2 and job.status(0) is None


def test_a_thief_robbed_in_turn_hands_over_only_through_the_owner() -> None:
    job = new_job(n=2)
    job.handle(StealRequest(H1, 2, 1, 0.0))  # H1 holds (0, 0) and (1, 0)
    job.handle(StealRequest(H2, 1, 1, 0.0))  # H2 holds (0, 1)
    # H2 runs another replica of subtask 0 already: only subtask 1's replica moves
    assert job.handle(TransferReplicas(H1, H2, (R(0, 0), R(1, 0)), 5.0)) == [Transferred(H1, H2, (R(1, 0),), 5.0 + LEASE)]
    assert job.handle(ClaimReceived(honest(H1, R(1, 0)), 6.0))[0].status == "rejected"  # H1 gave it up
    assert job.handle(ClaimReceived(honest(H2, R(1, 0)), 6.0))[0].status == "accepted"
    assert job.handle(TransferReplicas(H3, H2, (R(0, 0),), 7.0)) == [Transferred(H3, H2, (), 7.0 + LEASE)]  # not H3's


def test_an_idle_owner_takes_back_from_a_thief_only_what_it_may_run_and_queues_it_for_its_slots() -> None:
    job = new_job(n=2)
    job.handle(StealRequest(H1, 2, 1, 0.0))  # H1 holds (0, 0) and (1, 0)
    job.handle(StealRequest(OWNER, 1, 1, 0.0))  # the owner's own slot runs (0, 1)
    assert job.handle(TransferReplicas(H1, OWNER, (R(0, 0), R(1, 0)), 5.0)) == [Transferred(H1, OWNER, (R(1, 0),), 5.0 + LEASE)]
    p = job.progress()  # (0, 0) stays with H1, (0, 1) with the owner; both replicas of subtask 1 are queued
    assert (p.running, p.queued, job.surplus()) == (1, 2, 2)
    assert job.handle(StealRequest(H2, 2, 1, 6.0)) == [Grant(H2, 1, (R(1, 1),), 6.0 + LEASE)]  # the owner's to take
    assert job.handle(StealRequest(OWNER, 2, 2, 6.0)) == [Grant(OWNER, 2, (R(1, 0),), 6.0 + LEASE)]
    assert job.handle(ClaimReceived(honest(H1, R(1, 0)), 7.0))[0].status == "rejected"  # H1 gave it up


def test_a_transfer_the_new_holder_never_confirms_blames_nobody() -> None:
    """Neither thief can frame the other: an unconfirmed hand-over costs the giver an attempt, nobody reputation."""
    job = new_job(n=2)
    job.handle(StealRequest(H1, 2, 1, 0.0))  # H1 holds (0, 0) and (1, 0)
    job.handle(TransferReplicas(H1, H2, (R(0, 0), R(1, 0)), 1.0))
    job.handle(RenewLeases(H2, (R(1, 0),), 2.0))  # H2 confirms one of them
    lost = of(job.handle(Tick(100.0)), ReplicaLost)
    assert lost == [ReplicaLost(H1, R(0, 0), LEASE_LAPSED, credible=False), ReplicaLost(H2, R(1, 0), LEASE_LAPSED)]


def test_cancel_closes_every_open_subtask_and_revokes_every_lease() -> None:
    job = new_job(n=3)
    job.handle(StealRequest(H1, 2, 1, 0.0))
    assert job.handle(Cancel(1.0)) == [Revoke(H1, (R(0, 0), R(1, 0)), "the job was cancelled")]
    assert job.finished and job.cancelled and job.surplus() == 0 and job.progress().running == 0
    assert job.progress().queued == 0 and job.open_count() == 0
    assert job.handle(StealRequest(H2, 3, 1, 1.0)) == [Grant(H2, 1, (), 1.0 + LEASE)]
    assert job.handle(ClaimReceived(honest(H1, R(1, 0)), 2.0)) == [Ack(H1, R(1, 0), "late", "the job was cancelled")]
    assert job.status(1) is None  # nothing more is decided


def test_stale_steal_requests_are_dropped_and_a_retransmission_gets_the_same_grant() -> None:
    job = new_job(n=4)
    first = job.handle(StealRequest(H1, 2, 7, 0.0))
    assert job.handle(StealRequest(H1, 2, 7, 1.0)) == [Grant(H1, 7, (R(0, 0), R(1, 0)), 1.0 + LEASE)]
    assert job.surplus() == 6  # nothing more was granted
    job.handle(StealRequest(H1, 1, 8, 2.0))
    assert job.handle(StealRequest(H1, 5, 7, 3.0)) == []
    assert first == [Grant(H1, 7, (R(0, 0), R(1, 0)), LEASE)]


def test_a_retransmission_whose_grant_is_no_longer_held_is_served_as_a_new_request() -> None:
    job = new_job(n=4)
    job.handle(StealRequest(H1, 2, 7, 0.0))
    job.handle(ReleaseReplicas(H1, (R(0, 0), R(1, 0)), 0.5))  # it heard the answer late and handed the replicas back
    assert job.handle(StealRequest(H1, 2, 7, 1.0)) == [Grant(H1, 7, (R(0, 0), R(1, 0)), 1.0 + LEASE)]
    assert job.handle(StealRequest(H1, 1, 7, 2.0)) == [Grant(H1, 7, (R(0, 0), R(1, 0)), 2.0 + LEASE)]  # held again


def test_unknown_events_are_refused() -> None:
    with pytest.raises(TypeError):
        new_job().handle(object())  # type: ignore[arg-type]


# --- crashes: a snapshot of the window and the journal's verdicts -----------------------------


def journal_of(out: list[Instruction]) -> list[tuple[int, str]]:
    """The journal entries a node writes for these instructions: (index, status)."""
    return [(d.index, status_of(d.outcome)) for d in out if isinstance(d, SubtaskDecided)]


def test_a_job_survives_any_number_of_restarts_from_an_old_snapshot() -> None:
    """The snapshot was saved before a verdict; the journal holds it. Restore, then restore again."""
    job = new_job(n=3, replicas=1, quorum=1, max_replicas=1)
    job.handle(StealRequest(H1, 2, 1, 0.0))
    snap = json.loads(json.dumps(job.snapshot()))  # subtasks 0 and 1 open, undecided
    journal = journal_of(job.handle(ClaimReceived(honest(H1, R(1, 0)), 1.0)))
    for _ in range(3):
        job = JobOwner.restore(snap, journal)
        assert job.status(1) == "verified" and job.status(0) is None and job.open_count() == 1
        assert job.progress() == Progress(3, 1, 0, 0, 0, 2)  # subtask 0's replica back in the queue, 2 untouched
        snap = json.loads(json.dumps(job.snapshot()))
    (grant,) = job.handle(StealRequest(H2, 5, 1, 2.0))
    assert isinstance(grant, Grant) and grant.replicas == (R(0, 0), R(2, 0))


def test_a_verdict_journalled_after_the_snapshot_closes_its_subtask_wherever_it_was() -> None:
    job = new_job(n=4, replicas=1, quorum=1, max_replicas=1)
    snap = job.snapshot()  # nothing opened yet
    job.handle(StealRequest(H1, 3, 1, 0.0))
    journal = journal_of(job.handle(ClaimReceived(honest(H1, R(1, 0)), 1.0)))
    restored = JobOwner.restore(snap, journal)
    assert restored.status(1) == "verified" and restored.progress().verified == 1
    assert restored.surplus() == 3  # subtasks 0, 2 and 3 are to run; subtask 1 is skipped when reached
    (grant,) = restored.handle(StealRequest(H2, 5, 1, 2.0))
    assert isinstance(grant, Grant) and [r.index for r in grant.replicas] == [0, 2, 3]


def test_a_verdict_reached_before_the_snapshot_but_never_journalled_runs_again() -> None:
    job = new_job(n=2, replicas=1, quorum=1, max_replicas=1)
    job.handle(StealRequest(H1, 2, 1, 0.0))
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0))  # decided; the journal write never landed
    restored = JobOwner.restore(job.snapshot(), [])
    assert restored.status(0) is None and restored.is_open(0) and restored.progress().queued == 2
    (grant,) = restored.handle(StealRequest(H2, 5, 1, 2.0))
    assert isinstance(grant, Grant) and grant.replicas == (R(0, 0), R(1, 0))


def test_snapshot_and_restore_keep_claims_and_bindings_and_requeue_leases() -> None:
    job = new_job(n=3)
    job.handle(StealRequest(H1, 3, 1, 0.0))
    job.handle(StealRequest(H2, 3, 1, 0.0))
    journal = journal_of(job.handle(ClaimReceived(honest(H1, R(2, 0)), 1.0)))
    journal += journal_of(job.handle(ClaimReceived(honest(H2, R(2, 1)), 1.0)))
    job.handle(ClaimReceived(honest(H1, R(1, 0)), 1.0))
    again = JobOwner.restore(json.loads(json.dumps(job.snapshot())), journal)
    assert again.status(2) == job.status(2) == "failed" and again.status(1) is None
    assert again.progress() == Progress(3, 0, 1, 0, 0, 3)  # replicas 0.0, 0.1, 1.1 back in the queue
    # H2 kept working through the owner's crash: its claim is still accepted, and H1's is still a duplicate
    out = again.handle(ClaimReceived(honest(H2, R(1, 1)), 2.0))
    assert out[0] == Ack(H2, R(1, 1), "accepted") and isinstance(out[1], SubtaskDecided)
    assert again.handle(ClaimReceived(honest(H1, R(1, 0)), 2.0)) == [Ack(H1, R(1, 0), "late", DECIDED)]
    # and H1 can still take only replica 0 of subtask 0, which it was bound to
    assert again.handle(StealRequest(H1, 5, 2, 3.0)) == [Grant(H1, 2, (R(0, 0),), 3.0 + LEASE)]


def test_a_finished_job_restores_finished_with_every_kind_of_outcome() -> None:
    job = new_job(replicas=1, quorum=1, max_replicas=1, n=3, max_attempts=1)
    snap = job.snapshot()
    job.handle(StealRequest(H1, 3, 1, 0.0))
    journal = journal_of(job.handle(ClaimReceived(honest(H1, R(2, 0)), 1.0)))  # verified failure (trap)
    journal += journal_of(job.handle(ClaimReceived(honest(H1, R(1, 0)), 1.0)))  # verified output
    journal += journal_of(job.handle(Tick(LEASE)))  # subtask 0: out of attempts
    assert job.finished
    for old in (snap, job.snapshot()):
        again = JobOwner.restore(json.loads(json.dumps(old)), journal)
        assert again.finished and again.progress() == job.progress()
        assert [again.status(i) for i in range(3)] == ["failed", "verified", "failed"]
        assert again.handle(StealRequest(H2, 3, 1, 2.0)) == [Grant(H2, 1, (), 2.0 + LEASE)]


def test_a_disputed_subtask_stays_disputed_across_a_restart() -> None:
    job = new_job(replicas=2, quorum=2, max_replicas=2, n=1)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    job.handle(StealRequest(BAD, 1, 1, 0.0))
    job.handle(ClaimReceived(honest(H1, R(0, 0)), 1.0))
    journal = journal_of(job.handle(ClaimReceived(make_claim(BAD, R(0, 1), "ok", EVIL, 1), 1.0, frozenset({BAD}))))
    assert JobOwner.restore(job.snapshot(), journal).status(0) == job.status(0) == "disputed"


def test_restore_refuses_a_damaged_snapshot_or_journal() -> None:
    job = new_job(n=2)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    snap = job.snapshot()
    bad_claim = [[0, {**snap["open"][0][1], "claims": ["00"]}]]
    damages: list[dict[str, object]] = [
        {"format": 9}, {"open": [[5, snap["open"][0][1]]]}, {"owner": "x"}, {"replication": [3, 2, 1]},
        {"open": bad_claim}, {"cursor": 3}, {"open": snap["open"] * 2},
    ]  # fmt: skip
    for damage in damages:
        with pytest.raises(ValueError):
            JobOwner.restore({**snap, **damage})
    with pytest.raises(ValueError):
        JobOwner.restore(snap, [(2, "ok")])


def test_a_policy_that_cannot_verify_is_refused() -> None:
    with pytest.raises(ValueError):
        new_job(replicas=2, quorum=4, max_replicas=3)
    with pytest.raises(ValueError):
        new_job(n=0)


def test_replicas_below_quorum_start_with_quorum() -> None:
    assert new_job(replicas=1, quorum=2, max_replicas=3, n=2).surplus() == 4


# --- the state machine ------------------------------------------------------------------------


class JobMachine(RuleBasedStateMachine):
    """Random interleavings against one owner; the invariants say what must always hold.

    The owner's node is modelled as the real one works: every verdict goes to a
    journal (a write that may still be in flight when the owner crashes), and a
    snapshot of the window is saved now and then. A crash restores the last
    saved snapshot, however old, with whatever the journal holds.
    """

    @initialize(data=st.data(), n=st.integers(1, 6), attempts=st.sampled_from([2, 3]))
    def start(self, data: st.DataObject, n: int, attempts: int) -> None:
        # a small mesh runs out of nodes allowed to take a replica long before a large one does
        self.peers = data.draw(st.sampled_from([IDS, [OWNER, H1, H2, BAD]]), "peers")
        self.honest = [p for p in HONEST if p in self.peers]
        # three honest nodes and one liar always reach a verdict with a quorum of 2 (three is too many if one times out)
        quorum = data.draw(st.integers(1, 3 if len(self.honest) > 3 else 2), "quorum")
        cap = data.draw(st.integers(quorum, 4), "max_replicas")
        self.policy = Replication(replicas=data.draw(st.integers(1, cap), "replicas"), quorum=quorum, max_replicas=cap)
        self.max_open = data.draw(st.sampled_from([1, 2, 3, 100]), "max_open")
        max_pending = data.draw(st.sampled_from([15, 10**6]), "max_pending_bytes")  # ok claims are 10 bytes
        self.job = JobOwner(JOB, OWNER, self.policy, n, lease_seconds=LEASE, max_attempts=attempts,
                            max_open=self.max_open, max_pending_bytes=max_pending)  # fmt: skip
        self.n, self.now = n, 0.0
        self.rep = Reputation()
        self.held: dict[PeerId, set[ReplicaRef]] = {p: set() for p in IDS}
        self.request_id = dict.fromkeys(IDS, 0)
        self.asked = dict.fromkeys(IDS, 0)
        self.bound: dict[tuple[PeerId, int], int] = {}  # what the owner knows: who runs which replica
        self.sent: dict[tuple[PeerId, int], ResultClaim] = {}  # claims the owner accepted
        self.decided: dict[int, str] = {}  # verdicts reached, by status, journalled or not
        self.journal: dict[int, str] = {}  # verdicts whose journal write landed
        self.finishes = 0
        self.seen_ids: dict[PeerId, int] = {}  # the newest steal request id the owner has seen, per thief
        self.open_cap = self.max_open
        self.save_snapshot()  # a job is journalled with its first snapshot

    # --- plumbing ----------------------------------------------------------------------

    def apply(self, event: Event) -> list[Instruction]:
        untrusted = event.untrusted if isinstance(event, ClaimReceived) else frozenset()
        out = self.job.handle(event)
        if isinstance(event, StealRequest):
            self.seen_ids[event.thief] = max(self.seen_ids.get(event.thief, 0), event.request_id)
        for i in out:
            if isinstance(i, Grant):
                for ref in i.replicas:
                    self.bind(i.thief, ref)
                    assert (i.thief, ref.index) not in self.sent, "granted a subtask it already ran"
                    assert ref.index not in self.decided
                    self.held[i.thief].add(ref)
            elif isinstance(i, Transferred):
                for ref in i.replicas:
                    assert ref in self.held[i.holder], "moved a replica the holder did not hold"
                    assert (i.to, ref.index) not in self.sent, "handed a subtask to a node that ran it"
                    del self.bound[(i.holder, ref.index)]
                    self.bind(i.to, ref)
                    self.held[i.holder].discard(ref)
                    self.held[i.to].add(ref)
            elif isinstance(i, Revoke):
                self.held[i.holder] -= set(i.replicas)
            elif isinstance(i, ReplicaLost) and i.credible:
                self.rep.record_failure(i.holder)
            elif isinstance(i, SubtaskDecided):
                assert i.index not in self.decided, "decided twice"
                self.decided[i.index] = status_of(i.outcome)
                if isinstance(i.outcome, Verified):
                    self.check_verified(i.index, i.outcome, untrusted)
                    self.rep.record_verdict(i.outcome)
            elif isinstance(i, JobFinished):
                self.finishes += 1
                assert self.finishes == 1 and len(self.decided) == self.n
        return out

    def bind(self, peer: PeerId, ref: ReplicaRef) -> None:
        """``peer`` was given ``ref``: a node runs one replica of a subtask, or moves on from one someone else has."""
        old = self.bound.get((peer, ref.index), ref.replica)
        if old != ref.replica:
            others_have_it = any(R(ref.index, old) in refs for p, refs in self.held.items() if p != peer) or any(
                c.replica == old for (p, i), c in self.sent.items() if i == ref.index and p != peer
            )
            assert others_have_it, "two replicas of one subtask, and nobody else had the first"
        self.bound[(peer, ref.index)] = ref.replica

    def check_verified(self, index: int, v: Verified, untrusted: frozenset[PeerId]) -> None:
        assert len(set(v.counted)) == len(v.counted) >= self.policy.quorum, "accepted without quorum"
        assert not set(v.counted) & untrusted, "an untrusted executor counted"
        for p in v.counted:
            assert self.sent[(p, index)].agreement_key() == (v.status, v.output_sha256, v.message)
        if self.policy.quorum >= 2:  # one byzantine peer cannot make a quorum alone
            assert (v.status, v.output_sha256) in (truth(index), ("timeout", None)), "the forgery was accepted"

    def next_id(self, peer: PeerId) -> int:
        self.request_id[peer] += 1
        return self.request_id[peer]

    def send(self, claim: ResultClaim) -> None:
        ref = R(claim.index, claim.replica)
        self.held[claim.executor].discard(ref)
        if claim.status == "ok":
            claim = sized(claim, 10)
        key = (claim.executor, claim.index)
        first = key not in self.sent
        if first:  # the verdict this claim may reach is checked against it
            self.sent[key] = claim
        out = self.apply(ClaimReceived(claim, self.now, self.rep.barred()))
        assert isinstance(out[0], Ack) and out[0].executor == claim.executor
        if first and out[0].status != "accepted":
            del self.sent[key]

    # --- rules -------------------------------------------------------------------------

    @rule(peer=st.sampled_from(IDS), n=st.integers(1, 4), repeat=st.booleans())
    def steal(self, peer: PeerId, n: int, repeat: bool) -> None:
        if peer not in self.peers:
            return
        fresh = not (repeat and self.request_id[peer])
        if fresh:
            rid, self.asked[peer] = self.next_id(peer), n
        else:  # a retransmission: same id, same size
            rid, n = self.request_id[peer], self.asked[peer]
        had_work = self.job.has_work_for(peer)
        out = self.apply(StealRequest(peer, n, rid, self.now))
        assert len(out) == 1 and isinstance(out[0], Grant) and len(out[0].replicas) <= n
        if fresh:  # a node's slots look for work elsewhere exactly when its own job would give it none
            assert bool(out[0].replicas) == had_work

    @rule(peer=st.sampled_from(IDS), stale=st.integers(1, 3))
    def stale_steal(self, peer: PeerId, stale: int) -> None:
        if peer not in self.peers:
            return
        if self.seen_ids.get(peer, 0) > stale:  # older than an id the owner has seen (and not forgotten)
            assert self.apply(StealRequest(peer, 4, self.seen_ids[peer] - stale, self.now)) == []

    @rule(data=st.data(), peer=st.sampled_from(HONEST), flaky=st.integers(0, 9))
    def report(self, data: st.DataObject, peer: PeerId, flaky: int) -> None:
        if peer in self.peers and self.held[peer]:
            refs = data.draw(st.lists(st.sampled_from(sorted(self.held[peer])), min_size=1, unique=True))
            for ref in refs:
                self.send(honest(peer, ref, timeout=flaky == 0))

    @rule(n=st.integers(1, 4), mode=st.sampled_from(["hash", "fuel", "status", "refuse"]))
    def byzantine_steals_and_reports(self, n: int, mode: str) -> None:
        self.apply(StealRequest(BAD, n, self.next_id(BAD), self.now))
        for ref in sorted(self.held[BAD]):
            status, sha = truth(ref.index)
            f = fuel(ref.index, ENGINE[BAD])
            if mode == "hash":
                status, sha = "ok", EVIL
            elif mode == "fuel":  # the right output, without having done the work
                f += 1
            elif mode == "refuse":  # the task's own failure, claimed for input it accepts
                status, sha = "task_error", None
            else:
                status, sha = ("trap", None) if status == "ok" else ("ok", EVIL)
            self.send(make_claim(BAD, ref, status, sha, f))

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        if self.sent:
            key = data.draw(st.sampled_from(sorted(self.sent, key=lambda k: (k[0].to_bytes(), k[1]))))
            out = self.apply(ClaimReceived(self.sent[key], self.now, self.rep.barred()))
            assert len(out) == 1 and isinstance(out[0], Ack) and out[0].status in ("duplicate", "late")

    @rule(peer=st.sampled_from(IDS), index=st.integers(0, 5), replica=st.integers(0, 3))
    def unsolicited_claim(self, peer: PeerId, index: int, replica: int) -> None:
        if index < self.n and self.bound.get((peer, index)) != replica and index not in self.decided:
            out = self.apply(ClaimReceived(make_claim(peer, R(index, replica), "ok", EVIL, 1), self.now))
            assert out == [Ack(peer, R(index, replica), "rejected", NOT_GRANTED)]

    @rule(data=st.data(), holder=st.sampled_from(IDS), to=st.sampled_from(IDS))
    def robbed_in_turn(self, data: st.DataObject, holder: PeerId, to: PeerId) -> None:
        if to in self.peers and self.held[holder]:
            refs = data.draw(st.lists(st.sampled_from(sorted(self.held[holder])), min_size=1, unique=True))
            self.apply(TransferReplicas(holder, to, tuple(refs), self.now))

    @rule(peer=st.sampled_from(IDS))
    def renew(self, peer: PeerId) -> None:
        if self.held[peer]:
            self.apply(RenewLeases(peer, tuple(sorted(self.held[peer])), self.now))

    @rule(data=st.data(), peer=st.sampled_from(IDS))
    def release(self, data: st.DataObject, peer: PeerId) -> None:
        if self.held[peer]:
            ref = data.draw(st.sampled_from(sorted(self.held[peer])))
            self.held[peer].discard(ref)
            self.apply(ReleaseReplicas(peer, (ref,), self.now))

    @rule(dt=st.sampled_from([0.0, 1.0, 10.0, LEASE - 1, LEASE, 3 * LEASE]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.apply(Tick(self.now))

    @rule(peer=st.sampled_from(IDS[1:]), crashed=st.booleans())
    def peer_leaves(self, peer: PeerId, crashed: bool) -> None:
        if peer not in self.peers:
            return
        if crashed:  # it lost its work; otherwise it was only cut off, kept working, and may still report
            self.held[peer].clear()
        self.apply(PeerLeft(peer, self.now))

    @rule()
    def journal_writes_land(self) -> None:
        self.journal.update(self.decided)

    @rule()
    def save_snapshot(self) -> None:
        """What a restart from this snapshot still knows: the window's bindings and accepted claims."""
        self.saved = json.loads(json.dumps(self.job.snapshot()))
        open_now = {i for i in range(self.n) if self.job.is_open(i)}
        self.saved_bound = {k: r for k, r in self.bound.items() if k[1] in open_now}
        self.saved_sent = {k: c for k, c in self.sent.items() if k[1] in open_now}
        self.saved_ids = dict(self.seen_ids)

    @rule(lost_writes=st.booleans())
    def owner_crashes(self, lost_writes: bool) -> None:
        if not lost_writes:
            self.journal_writes_land()
        self.job = JobOwner.restore(self.saved, sorted(self.journal.items()))
        assert json.loads(json.dumps(self.job.snapshot()))["open"] == [
            o for o in self.job.snapshot()["open"]
        ]  # the restored window is a plain dict again
        for index, status in self.journal.items():
            assert self.job.status(index) == ("verified" if status == "ok" else "disputed" if status == "disputed" else "failed")
        for index in set(range(self.n)) - set(self.journal):
            assert self.job.status(index) is None, "a verdict the journal does not hold survived"
        p = self.job.progress()
        assert (p.verified + p.failed + p.disputed, p.running) == (len(self.journal), 0)
        # What the owner forgot: verdicts never journalled, and whatever happened to the window since the snapshot.
        self.decided = dict(self.journal)
        known = {i for i in range(self.n) if self.job.is_open(i) and self.saved_is_open(i)}
        self.bound = {k: r for k, r in self.saved_bound.items() if k[1] in known}
        self.sent = {k: c for k, c in self.saved_sent.items() if k[1] in known}
        self.finishes = int(self.job.finished)
        self.seen_ids = dict(self.saved_ids)
        self.open_cap = max(self.max_open, self.job.open_count())  # a restore may reopen more than fit

    def saved_is_open(self, index: int) -> bool:
        return any(i == index for i, _ in self.saved["open"])

    # --- invariants and the end --------------------------------------------------------

    @invariant()
    def counters_add_up(self) -> None:
        p = self.job.progress()
        assert p.verified + p.failed + p.disputed == len(self.decided)
        assert self.job.surplus() <= p.queued
        assert self.job.finished == (len(self.decided) == self.n)
        assert self.job.open_count() <= self.open_cap

    @invariant()
    def each_nodes_count_of_binding_subtasks_is_exact(self) -> None:
        if hasattr(self, "job"):  # the O(1) count _room_for reads, against a recount
            assert self.job._ahead == Counter(p for sub in self.job._open.values() for p in sub.bound)

    @invariant()
    def honest_peers_are_never_barred(self) -> None:
        assert self.rep.barred() <= {BAD}

    def teardown(self) -> None:
        if not hasattr(self, "job"):
            return
        for _ in range(400):  # each round reports, steals, or lets every foreign lease lapse
            if self.job.finished:
                break
            moved = False
            for peer in self.honest:
                for ref in sorted(self.held[peer]):
                    self.send(honest(peer, ref))
                    moved = True
                out = self.apply(StealRequest(peer, 4, self.next_id(peer), self.now))
                moved = moved or any(isinstance(i, Grant) and i.replicas for i in out)
            if not moved:
                self.now += LEASE
                self.apply(Tick(self.now))
        assert self.job.finished, f"the job did not end: {self.job.progress()}"
        assert sorted(self.decided) == list(range(self.n)) and self.finishes == 1
        assert self.job.surplus() == 0 and self.job.progress().running == 0 and self.job.open_count() == 0


TestJobMachine = JobMachine.TestCase
TestJobMachine.settings = settings(max_examples=300, stateful_step_count=50, deadline=None, derandomize=True)


def test_a_holder_that_renews_forever_keeps_a_replica_no_longer_than_max_hold() -> None:
    job = JobOwner(JOB, OWNER, Replication(1, 1, 1), 1, lease_seconds=LEASE, max_hold=100.0)
    job.handle(StealRequest(H1, 1, 1, 0.0))
    assert job.handle(RenewLeases(H1, (R(0, 0),), 80.0)) == [Renewed(H1, (R(0, 0),), 80.0 + LEASE)]
    assert job.handle(Tick(99.0)) == []  # renewed, but the lease ends at the bound all the same
    assert job.handle(Tick(100.0)) == [ReplicaLost(H1, R(0, 0), "held_too_long")]
    # it cannot take the lease back, as a holder whose lease merely lapsed could; another node takes it
    assert job.handle(RenewLeases(H1, (R(0, 0),), 101.0)) == [Revoke(H1, (R(0, 0),), "lease lost")]
    assert job.handle(StealRequest(H2, 1, 1, 101.0)) == [Grant(H2, 1, (R(0, 0),), 101.0 + LEASE)]
    # a report that comes after all is still heard
    assert isinstance(decision(job.handle(ClaimReceived(honest(H1, R(0, 0)), 102.0))), Verified)
    again = JobOwner.restore(json.loads(json.dumps(job.snapshot())))
    assert again.max_hold == 100.0
