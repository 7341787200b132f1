"""The thief's choice: whom to steal from, and how much. Pure functions.

A node with idle slots and too little queued asks one peer for a batch of
replicas. The victim is the peer advertising the most surplus, because that is
where work is piling up; among equals, the nearest (lowest round-trip time),
because a steal costs a round trip before anything runs; then one on our own
engine (its subtasks' fuel figures, and homogeneous-redundancy groups, match
ours); then the better reputation. Peers with a poor record come last whatever
they advertise: work taken from them is work their results would make suspect.

The batch is at most half the victim's surplus, rounded up (so a lone surplus
replica still moves, and two thieves cannot strip one victim bare in one round),
and at most ``BATCH_FACTOR`` times the thief's idle slots less what it already
has queued: a second replica per slot waiting in the deque hides the round trip
of the next steal, and more than that only makes the thief a victim in turn.
A thief robbed in turn applies the same half-surplus bound (``grant_limit``);
an owner grants less, a share of what is left per node (``fair_share``), so
the last and often costliest subtasks are spread over every node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from .peer_id import PeerId
from .peers import PeerRecord
from .reputation import Reputation

__all__ = [
    "BATCH_FACTOR",
    "POOR_SCORE",
    "PeerView",
    "StealPlan",
    "better_idle",
    "choose_victim",
    "fair_share",
    "grant_for",
    "grant_limit",
    "plan_steal",
    "steal_count",
    "victim_order",
    "views_of",
]

BATCH_FACTOR: Final = 2
POOR_SCORE: Final = 0.25  # below this (about three unanswered leases for a newcomer) a peer is served last


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the thief knows of one potential victim.

    Attributes:
        peer: its peer ID.
        surplus: replicas it advertises as grantable.
        rtt_ms: the last measured round-trip time, or None if not measured yet.
        rank: its position in ``Reputation.rank`` (0 is the best).
        engine: its wasmtime version and architecture, as advertised.
        poor: barred from quorum, or a score below ``POOR_SCORE``.
    """

    peer: PeerId
    surplus: int
    rtt_ms: float | None
    rank: int
    engine: str
    poor: bool = False


@dataclass(frozen=True, slots=True)
class StealPlan:
    """Ask ``victim`` for ``count`` replicas."""

    victim: PeerId
    count: int


def views_of(records: Iterable[PeerRecord], reputation: Reputation) -> list[PeerView]:
    """Build the views of the alive peers in the peer table."""
    alive = [r for r in records if r.state == "alive"]
    order = {peer: i for i, peer in enumerate(reputation.rank(r.peer for r in alive))}
    return [
        PeerView(
            peer=r.peer,
            surplus=r.presence.surplus,
            rtt_ms=r.rtt_ms,
            rank=order[r.peer],
            engine=r.presence.engine,
            poor=reputation.barred_from_quorum(r.peer) or reputation.score(r.peer) < POOR_SCORE,
        )
        for r in alive
    ]


def victim_order(views: Iterable[PeerView], engine: str | None = None) -> list[PeerView]:
    """Peers with surplus, the best victim first.

    Args:
        views: the candidates.
        engine: the thief's engine, preferred as a tie-break after RTT; None for no preference.
    """
    return sorted(
        (v for v in views if v.surplus > 0),
        key=lambda v: (
            v.poor,
            -v.surplus,
            math.inf if v.rtt_ms is None else v.rtt_ms,
            engine is not None and v.engine != engine,
            v.rank,
            v.peer.to_bytes(),
        ),
    )


def choose_victim(views: Iterable[PeerView], engine: str | None = None) -> PeerView | None:
    """The best victim, or None if nobody has surplus."""
    ordered = victim_order(views, engine)
    return ordered[0] if ordered else None


def grant_limit(requested: int, surplus: int) -> int:
    """How many replicas a victim hands over: what was asked, up to half its surplus rounded up."""
    return max(0, min(requested, (surplus + 1) // 2))


def fair_share(requested: int, surplus: int, nodes: int) -> int:
    """How many replicas an owner grants one thief: what was asked, up to a share of what is left.

    Guided self-scheduling: each grant takes ``surplus / (2 * nodes)``, so grants
    shrink as the job drains and the last subtasks (often the costliest: a
    mandelbrot's centre tiles run a hundred times longer than its edges) are
    spread over every node instead of sitting in one thief's stock.
    """
    return max(0, min(requested, max(1, math.ceil(surplus / (2 * max(1, nodes))))))


def better_idle(thief: PeerId, idle_good_peers: Iterable[PeerId], could_take: Callable[[PeerId], bool]) -> bool:
    """Whether a peer with a good record is idle and could be given some of this work in the poor ``thief``'s place.

    A peer that could not (it is bound to another replica of every subtask left)
    must not keep the thief waiting: at a job's end the last replica can be one
    only the poor thief may take, and it would be refused it for good.
    """
    return any(peer != thief and could_take(peer) for peer in idle_good_peers)


def grant_for(requested: int, surplus: int, nodes: int, *, poor: bool, better_idle: bool) -> int:
    """What an owner grants a thief: a fair share of what is left; and a thief with a poor record
    (see ``POOR_SCORE``) is handed work last: one replica at a time, none while a peer with a
    better record is idle and could take some of it (``better_idle``).
    """
    share = fair_share(requested, surplus, nodes)
    if not poor:
        return share
    return 0 if better_idle else min(1, share)


def steal_count(victim_surplus: int, idle_slots: int, queued: int = 0, factor: int = BATCH_FACTOR) -> int:
    """How many replicas to ask for.

    Args:
        victim_surplus: what the victim advertises.
        idle_slots: the thief's idle executor slots.
        queued: replicas the thief already has waiting in its deque.
        factor: replicas wanted per idle slot.

    Returns:
        Up to half the victim's surplus (rounded up), and no more than
        ``idle_slots * factor - queued``; 0 when nothing should be stolen.
    """
    return max(0, min(grant_limit(victim_surplus, victim_surplus), idle_slots * factor - queued))


def plan_steal(
    views: Iterable[PeerView],
    *,
    idle_slots: int,
    queued: int = 0,
    engine: str | None = None,
    factor: int = BATCH_FACTOR,
) -> StealPlan | None:
    """Whom to steal from and how many, or None when this node should not steal now.

    Args:
        views: the peers, from ``views_of`` (the thief itself must not be among them).
        idle_slots: the thief's idle executor slots.
        queued: replicas already waiting in the thief's deque.
        engine: the thief's engine (a tie-break, see ``victim_order``).
        factor: replicas wanted per idle slot.
    """
    if idle_slots <= 0:
        return None
    victim = choose_victim(views, engine)
    if victim is None:
        return None
    count = steal_count(victim.surplus, idle_slots, queued, factor)
    return StealPlan(victim.peer, count) if count > 0 else None
