"""A simulated node's results on their way to their owners: the outbox, and the pushes that empty it.

Theory of operation:

As a real node's (``Workers._push``, ``Workers._retry_outbox``): a chunk's
results wait (``ran``) until the thief says to push them (``push``); then they
are in the outbox, which is in the journal and survives a crash, and go to their
owner at once. One push per owner is under way at a time; results that come
meanwhile go with the next, at most ``MAX_STEAL`` a message. Any answer from the
owner (accepted, duplicate, late, rejected) ends a result's retries and is told
to the thief (``acknowledged``). What no owner answered is pushed again
``FIRST_RETRY`` seconds later, then after 4, 8, 16 ... seconds up to
``RETRY_MAX``, to owners the node can reach; the thief may have forgotten the
job since (its owner left), but the outbox has not. Revoked results are dropped
(``drop``), never pushed.

A restart (``restart``) forgets what was under way, not the outbox.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from ..core.job import ReplicaRef
from ..core.result import ResultClaim
from ..core.thief import MAX_STEAL
from .network import Handler
from .world import World

__all__ = ["FIRST_RETRY", "RETRY_MAX", "Outbox"]

FIRST_RETRY: Final = 10.0  # seconds before the outbox pushes a result again ... (node/executing.py)
RETRY_MAX: Final = 60.0  # ... then 2 * 2^attempts, up to this (node/stealing.py)

Key = tuple[bytes, int, int]  # job ID, index, replica


@dataclass(slots=True)
class _Unacked:
    owner: int
    claim: ResultClaim
    attempts: int
    next_try: float


class Outbox:
    """The results of one node, from its runs to their owners' answers.

    Args:
        world: the simulation.
        peer: the node's number.
        serve: the owners' handler of a push, ``serve(owner, call, sender, claims)``.
        acknowledged: told which replicas of a job an owner answered for.
    """

    def __init__(
        self, world: World, peer: int, serve: Handler, acknowledged: Callable[[bytes, tuple[ReplicaRef, ...]], None]
    ) -> None:  # fmt: skip
        self.world, self.peer, self.serve, self.acknowledged = world, peer, serve, acknowledged
        self.label = f"peer {peer}"
        self.entries: dict[Key, _Unacked] = {}  # pushed, not answered: in the journal
        self._forget(0)

    def _forget(self, epoch: int) -> None:
        self.epoch = epoch
        self.ran: dict[tuple[bytes, ReplicaRef], ResultClaim] = {}  # run, not yet to push
        self._outgoing: dict[int, list[ResultClaim]] = {}  # to push, by owner, once the push under way ends
        self._pushing: set[int] = set()
        self._sweep_at, self._sweep_token = math.inf, 0

    def restart(self, epoch: int) -> None:
        """A new incarnation ``epoch``: what was under way is forgotten, the entries are pushed again when due."""
        self._forget(epoch)
        self._sweep_soon()

    def __len__(self) -> int:
        return len(self.entries)

    def keep(self, job_id: bytes, ref: ReplicaRef, claim: ResultClaim) -> None:
        """A run's result, until the thief says what to do with it."""
        self.ran[(job_id, ref)] = claim

    def push(self, owner: int, job_id: bytes, refs: tuple[ReplicaRef, ...]) -> None:
        """Into the outbox, and to ``owner`` (``PushResults``)."""
        retry = self.world.clock.now + FIRST_RETRY
        claims = self._outgoing.setdefault(owner, [])
        for ref in refs:
            claim = self.ran.pop((job_id, ref), None)
            if claim is not None:
                claims.append(claim)
                self.entries[(job_id, ref.index, ref.replica)] = _Unacked(owner, claim, 0, retry)
        counters = self.world.counters
        counters.max_outbox = max(counters.max_outbox, len(self.entries))
        if owner not in self._pushing:
            self._next(owner)
        self._sweep_soon()

    def drop(self, job_id: bytes, refs: tuple[ReplicaRef, ...]) -> None:
        """Results of revoked replicas: forget them, never push them (``DropResults``)."""
        for ref in refs:
            self.ran.pop((job_id, ref), None)
            self.entries.pop((job_id, ref.index, ref.replica), None)

    def _next(self, owner: int) -> None:
        batch = self._outgoing.pop(owner, None)
        if not batch:
            self._pushing.discard(owner)
            return
        self._pushing.add(owner)
        if len(batch) > MAX_STEAL:
            batch, self._outgoing[owner] = batch[:MAX_STEAL], batch[MAX_STEAL:]
        self._deliver(owner, tuple(batch), chained=True)

    def _deliver(self, owner: int, claims: tuple[ResultClaim, ...], chained: bool) -> None:
        self.world.net.call(self.peer, owner, "push", self.serve, (self.peer, claims),
                            partial(self._answered, owner, chained), partial(self._failed, owner, chained))  # fmt: skip

    def _answered(self, owner: int, chained: bool, answer: object) -> None:
        assert isinstance(answer, tuple)
        by_job: dict[bytes, list[ReplicaRef]] = {}
        for job_id, index, replica, _status in answer:
            self.entries.pop((job_id, index, replica), None)  # any answer ends the retries
            by_job.setdefault(job_id, []).append(ReplicaRef(index, replica))
        for job_id, refs in by_job.items():
            self.acknowledged(job_id, tuple(refs))
        if chained:
            self._next(owner)

    def _failed(self, owner: int, chained: bool) -> None:
        if chained:  # they wait in the outbox
            self._next(owner)

    def _sweep_soon(self) -> None:
        if not self.entries:
            return
        due = min(u.next_try for u in self.entries.values())
        if due < self._sweep_at:
            self._sweep_at, self._sweep_token = due, self._sweep_token + 1
            self.world.clock.at(due, self._sweep, self.epoch, self._sweep_token)

    def _sweep(self, epoch: int, token: int) -> None:
        """Push again what no owner answered, with backoff, to owners this node can reach."""
        if epoch != self.epoch or token != self._sweep_token:
            return
        w = self.world
        now = w.clock.now
        self._sweep_at = math.inf
        by_owner: dict[int, list[ResultClaim]] = {}
        for u in self.entries.values():
            if u.next_try <= now:
                u.attempts += 1
                u.next_try = now + min(RETRY_MAX, 2.0 * 2**u.attempts)
                by_owner.setdefault(u.owner, []).append(u.claim)
        for owner, claims in by_owner.items():
            if owner != self.peer and w.net.reachable(self.peer, owner):
                for k in range(0, len(claims), MAX_STEAL):
                    self._deliver(owner, tuple(claims[k : k + MAX_STEAL]), chained=False)
        self._sweep_soon()
