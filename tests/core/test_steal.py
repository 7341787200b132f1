"""The thief's choice of victim and batch size."""

from __future__ import annotations

import nacl.signing
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.job import ClaimReceived, ReplicaRef, StealRequest, Tick
from meshnode.core.manifest import Replication
from meshnode.core.owner import JobOwner
from meshnode.core.peer_id import PeerId
from meshnode.core.peers import PeerRecord
from meshnode.core.presence import Presence
from meshnode.core.reputation import Reputation
from meshnode.core.steal import (
    BATCH_FACTOR,
    PeerView,
    StealPlan,
    better_idle,
    choose_victim,
    fair_share,
    grant_for,
    grant_limit,
    plan_steal,
    steal_count,
    victim_order,
    views_of,
)
from meshnode.core.verify import Verified

from .test_owner import honest

PEERS = [PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key)) for i in range(5)]
A, B, C, D, E = PEERS


def view(
    peer: PeerId, surplus: int, rtt: float | None = 1.0, rank: int = 0, engine: str = "e1", poor: bool = False
) -> PeerView:
    return PeerView(peer, surplus, rtt, rank, engine, poor)


def test_most_surplus_wins() -> None:
    assert choose_victim([view(A, 3), view(B, 10, rtt=50.0), view(C, 0)]) == view(B, 10, rtt=50.0)


def test_ties_go_to_the_lowest_rtt_and_unmeasured_rtt_last() -> None:
    order = victim_order([view(A, 5, rtt=None), view(B, 5, rtt=9.0), view(C, 5, rtt=2.0)])
    assert [v.peer for v in order] == [C, B, A]


def test_poor_reputation_goes_last_whatever_it_advertises() -> None:
    order = victim_order([view(A, 100, poor=True), view(B, 2, rtt=80.0)])
    assert [v.peer for v in order] == [B, A]


def test_then_our_own_engine_then_the_better_rank() -> None:
    views = [view(A, 5, engine="e2", rank=0), view(B, 5, rank=2), view(C, 5, rank=1)]
    assert [v.peer for v in victim_order(views, engine="e1")] == [C, B, A]
    assert [v.peer for v in victim_order(views)] == [A, C, B]


def test_nobody_with_surplus_means_no_victim() -> None:
    assert choose_victim([view(A, 0)]) is None
    assert plan_steal([view(A, 0)], idle_slots=4) is None


def test_batch_is_half_the_surplus_rounded_up_and_bounded_by_idle_slots() -> None:
    assert steal_count(10, idle_slots=8) == 5
    assert steal_count(1, idle_slots=8) == 1  # a lone replica still moves
    assert steal_count(100, idle_slots=2) == 2 * BATCH_FACTOR
    assert steal_count(100, idle_slots=2, queued=3) == 2 * BATCH_FACTOR - 3
    assert steal_count(100, idle_slots=0) == 0
    assert steal_count(0, idle_slots=4) == 0


def test_plan_steal() -> None:
    views = [view(A, 9), view(B, 20, rtt=3.0)]
    assert plan_steal(views, idle_slots=2) == StealPlan(B, 4)
    assert plan_steal(views, idle_slots=0) is None
    assert plan_steal(views, idle_slots=2, queued=4) is None  # already enough queued


def test_grant_limit_keeps_half_for_the_victim() -> None:
    assert grant_limit(10, 6) == 3
    assert grant_limit(2, 6) == 2
    assert grant_limit(5, 0) == 0


def presence(peer: PeerId, surplus: int, engine: str = "e1") -> Presence:
    return Presence(
        peer_id=peer, seq=1, interval_ms=1000, addrs=(), version="0.1.0", engine=engine, runtimes=("wasm",), slots=2,
        idle=0, surplus=surplus, load1=0.0, mem_free=1, mem_total=2, cpu="cpu", gpus=(),
    )  # fmt: skip


def test_views_of_the_peer_table_with_reputation() -> None:
    rep = Reputation()
    rep.record_verdict(Verified("ok", b"h" * 32, (A,), (A,), (B,), (), (), ()))
    records = [
        PeerRecord(A, presence(A, 4), "alive", 1, 0.0, 0.0, rtt_ms=5.0),
        PeerRecord(B, presence(B, 40, "e2"), "alive", 1, 0.0, 0.0),
        PeerRecord(C, presence(C, 99), "gone", 1, 0.0, 0.0),
    ]
    views = views_of(records, rep)
    assert views == [view(A, 4, rtt=5.0, rank=0), view(B, 40, rtt=None, rank=1, engine="e2", poor=True)]
    assert plan_steal(views, idle_slots=1) == StealPlan(A, 2)


@settings(derandomize=True)
@given(st.integers(0, 1000), st.integers(0, 64), st.integers(0, 200), st.integers(1, 4))
def test_batch_bounds(surplus: int, idle: int, queued: int, factor: int) -> None:
    n = steal_count(surplus, idle, queued, factor)
    assert 0 <= n <= (surplus + 1) // 2
    assert n <= max(0, idle * factor - queued)
    if surplus > 0 and idle * factor > queued:
        assert n >= 1


@given(st.integers(1, 256), st.integers(0, 10_000), st.integers(1, 64))
def test_a_fair_share_never_exceeds_the_ask_or_what_is_left_and_moves_something(requested: int, surplus: int, nodes: int) -> None:
    share = fair_share(requested, surplus, nodes)
    assert 0 <= share <= requested
    assert share <= max(1, surplus)
    assert share >= 1  # a lone replica still moves
    assert share <= max(1, -(-surplus // (2 * nodes)))


def test_grants_shrink_as_the_job_drains() -> None:
    assert [fair_share(256, s, 2) for s in (2000, 400, 40, 4, 1)] == [256, 100, 10, 1, 1]


def test_peers_with_a_poor_record_are_handed_work_last() -> None:
    assert grant_for(8, 100, 2, poor=False, better_idle=True) == 8
    assert grant_for(8, 100, 2, poor=True, better_idle=True) == 0
    assert grant_for(8, 100, 2, poor=True, better_idle=False) == 1


def test_an_idle_peer_that_could_take_none_of_the_work_left_does_not_keep_a_poor_thief_waiting() -> None:
    """One subtask, two replicas: C ran replica 0 and reported it, B took replica 1 and its lease lapsed.
    Only B may take replica 1 now (C's result is in): refusing B because the idle C has a better record
    would leave the job waiting for good."""
    job = JobOwner(b"J" * 16, A, Replication(2, 2, 3), 1, lease_seconds=30.0)
    job.handle(StealRequest(C, 1, 1, 0.0))  # replica 0
    job.handle(StealRequest(B, 1, 1, 0.0))  # replica 1
    job.handle(ClaimReceived(honest(C, ReplicaRef(0, 0)), 1.0))  # one more result needed
    job.handle(Tick(30.0))  # B's lease lapses: replica 1 is back in the queue, B still bound to it
    assert job.surplus() == 1 and not job.finished
    assert not job.has_work_for(C) and job.has_work_for(B) and job.has_work_for(D)
    assert not better_idle(B, [C], job.has_work_for)  # so the poor B gets it ...
    assert grant_for(8, job.surplus(), 3, poor=True, better_idle=False) == 1
    assert better_idle(B, [C, D], job.has_work_for)  # ... unless an idle D with a good record could
    assert not better_idle(B, [B], job.has_work_for)  # (the thief itself never counts)
