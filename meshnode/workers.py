"""The node's executor slots, and the thief's side of work stealing.

Theory of operation:

*Slots.* Each of the node's slots runs one chunk of replicas at a time: its own
jobs' replicas first (from the hot end of each job's deque), then replicas it
stole (oldest job first). A chunk is sized to about ``CHUNK_SECONDS`` of work
from the module's measured time per subtask, so that a trivial subtask costs a
small share of one thread hop and one journal commit, and a long one runs alone.

*Stealing.* One stealer keeps a stock of stolen replicas: enough to keep every
slot busy for about ``STOCK_SECONDS`` (at least ``BATCH_FACTOR`` per slot), asked
for when the stock falls to half of that, so the round trip of the next steal
hides behind the work already here. It asks the best victim (core/steal.py);
a victim's answer says what it has left, so the thief keeps stealing from it
without waiting for its next presence. The module is fetched before the
replicas are queued. Work from an owner this node does not trust is refused,
the owner told why, and that victim left alone for a while.

*Results and leases.* Each chunk's signed results go to the outbox (journal) and
are pushed to their owner at once, in one message; what the owner does not
acknowledge is pushed again with backoff. One renewer keeps alive every lease
this node holds - queued, running, or waiting for an acknowledgement - with one
message per job every third of the lease.

*Stealing from thieves.* Stolen replicas beyond one per slot are surplus too:
a thief with nothing queued that asks this node when its own jobs have nothing
left is served from the cold end of the stock, through the owner
(``TransferAsk``), so the owner always knows who holds what and no replica is
ever in two hands; the owner itself, idle at the end of its job, gets them back
unrun. Only starving thieves are served, so replicas never go back and forth.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import trio

from .core import wire
from .core.job import ReplicaRef
from .core.job_messages import JobGrant, PushedResult, ResultPush, StealAsk, StealReply
from .core.manifest import JobManifest, Subtask
from .core.output_codec import pushed_result
from .core.peer_id import PeerId
from .core.presence import next_seq
from .core.steal import BATCH_FACTOR, PeerView, grant_limit, plan_steal
from .errors import MeshError, PeerUnavailableError, WireError
from .executor import INPUT_MISSING, RefusedWork, SignedResult
from .jobs import JobManager
from .local_exec import CHUNK_SECONDS, MAX_CHUNK
from .net.blob_protocol import fetch_from_any
from .net.host import MeshHost
from .net.job_protocol import JobClient
from .sandbox import ENGINE_ID

__all__ = ["Workers"]

log = logging.getLogger("meshnode")

STOCK_SECONDS: Final = 0.1  # stolen work kept per slot, in measured run time
MAX_STEAL: Final = 256  # replicas per steal request (the protocol's batch limit)
REFUSAL_BACKOFF: Final = 60.0  # seconds a victim whose work we refused is left alone
PUSH_BYTES: Final = 16 << 20  # outputs per result message
IDLE_WAIT: Final = 0.5  # an idle slot or stealer looks again at least this often


@dataclass(slots=True)
class StolenJob:
    """What this node holds of one job it does not own."""

    owner: PeerId
    envelope: bytes  # the owner's signed manifest
    manifest: JobManifest
    lease_s: float
    queued: deque[tuple[ReplicaRef, Subtask]] = field(default_factory=deque)  # not started, oldest first
    held: set[ReplicaRef] = field(default_factory=set)  # queued, running, or waiting for the owner's ack


class Workers:
    """Runs the node's slots, its stealer, its lease renewals and its result pushes.

    Args:
        host: the node's libp2p host.
        manager: the jobs this node owns, and its executor.
        slots: how many chunks run at once.
        victims: the current candidates to steal from (``views_of`` the peer table).
        set_idle: called with the number of idle slots whenever it changes.
        dropped: counts invalid messages by reason (the node's, shown by its API).
    """

    def __init__(
        self, host: MeshHost, manager: JobManager, slots: int,
        victims: Callable[[], list[PeerView]], set_idle: Callable[[int], None], dropped: Counter[str] | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.manager = manager
        self.executor = manager.executor
        self.slots = slots
        self.client = JobClient(host)
        self._victims = victims
        self._set_idle = set_idle
        self.dropped: Counter[str] = Counter() if dropped is None else dropped
        self._busy = 0
        self._stolen: dict[bytes, StolenJob] = {}  # by job ID, oldest first
        self._fresh_surplus: dict[PeerId, int] = {}  # from steal replies, newer than the peer's presence
        self._backoff: dict[PeerId, float] = {}  # victims left alone until then (monotonic)
        self._own_backoff: dict[bytes, float] = {}  # own jobs whose subtasks failed to start here
        self._request_id = 0
        self._seconds_per_subtask: float | None = None  # of stolen work, smoothed over chunks
        self._work = trio.Event()  # something to run appeared
        self._hungry = trio.Event()  # a slot found nothing to run
        self._new_leases = trio.Event()  # a job's first grant arrived
        self._nursery: trio.Nursery | None = None

    # --- wiring ---------------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self.slots):
                nursery.start_soon(self._slot)
            nursery.start_soon(self._stealer)
            nursery.start_soon(self._renewer)
            nursery.start_soon(self._retry_outbox)

    def wake(self) -> None:
        """New work of our own (a job submitted, replicas requeued): wake idle slots."""
        self._work.set()
        self._work = trio.Event()

    def presence_heard(self, peer: PeerId) -> None:
        """A peer's presence is newer than what its last steal reply said."""
        self._fresh_surplus.pop(peer, None)
        self._hungry.set()

    def peer_gone(self, peer: PeerId) -> None:
        """Drop the work of an owner that left: nobody would take its results."""
        self.client.forget(peer)
        self._fresh_surplus.pop(peer, None)
        for job_id, job in list(self._stolen.items()):
            if job.owner == peer:
                del self._stolen[job_id]

    def queued(self) -> int:
        return sum(len(j.queued) for j in self._stolen.values())

    def surplus(self) -> int:
        """Stolen replicas this node could give a starving peer: all it holds beyond one per slot."""
        return max(0, self.queued() - self.slots)

    # --- slots ----------------------------------------------------------------------------------

    async def _slot(self) -> None:
        while True:
            try:
                if await self._run_own() or await self._run_stolen():
                    continue
            except Exception:  # a bug in one chunk must not take the node down: its leases lapse
                log.exception("a slot failed; it starts again in a second")
                await trio.sleep(1.0)
                continue
            self._hungry.set()
            with trio.move_on_after(IDLE_WAIT):
                await self._work.wait()

    @contextmanager
    def _occupied(self) -> Iterator[None]:
        self._busy += 1
        self._set_idle(self.slots - self._busy)
        try:
            yield
        finally:
            self._busy -= 1
            self._set_idle(self.slots - self._busy)

    def _chunk(self, module_sha256: bytes, left: int, sharing: int) -> int:
        """About ``CHUNK_SECONDS`` of work, and no more than a share of what is ``left`` among ``sharing``
        slots: subtasks of one job can differ in cost a hundredfold, and the last chunks must be small
        for every slot to finish together."""
        seconds = self.executor.sandbox.seconds_per_run(module_sha256)
        by_time = 1 if not seconds else int(CHUNK_SECONDS / seconds)
        return max(1, min(MAX_CHUNK, by_time, left // (2 * sharing)))

    async def _run_own(self) -> bool:
        now = time.monotonic()
        for job in list(self.manager.jobs.values()):
            if job.owner.finished or self._own_backoff.get(job.job_id, 0.0) > now:
                continue
            sharing = self.slots * (1 + len(self._victims()))  # every node's slots, roughly
            n = self._chunk(job.manifest.module_sha256, job.owner.surplus(), sharing)
            grant = self.manager.take(job, n, time.monotonic())
            if grant is not None and grant.replicas:
                with self._occupied():
                    try:
                        await self.manager.run_grant(job, grant)
                    except MeshError as exc:  # our own blobs are damaged: leave it to peers for a while
                        log.warning("job %s: cannot run its subtasks here: %s", job.job_id.hex()[:12], exc)
                        self._own_backoff[job.job_id] = time.monotonic() + REFUSAL_BACKOFF
                return True
        return False

    async def _run_stolen(self) -> bool:
        for job in list(self._stolen.values()):
            if job.queued:
                n = min(len(job.queued), self._chunk(job.manifest.module_sha256, len(job.queued), self.slots))
                items = [job.queued.popleft() for _ in range(n)]
                if self.queued() <= self._stock() // 2:
                    self._hungry.set()  # restock while this chunk runs
                with self._occupied():
                    t0 = time.perf_counter()
                    await self._run_items(job, items)
                    latest = (time.perf_counter() - t0) / n
                    last = self._seconds_per_subtask or latest
                    self._seconds_per_subtask = 0.5 * last + 0.5 * latest  # one cheap chunk must not swell the stock
                return True
        return False

    async def _run_items(self, job: StolenJob, items: list[tuple[ReplicaRef, Subtask]]) -> None:
        now_ms = time.time_ns() // 1_000_000
        try:
            batch = self.executor.check_batch(job.envelope, [s for _, s in items], now_ms)
            missing = [p for p, reason in batch.refused if reason == INPUT_MISSING]
            if missing:  # inputs too large to travel inline: fetch them by hash, then check again
                for p in missing:
                    await fetch_from_any(self.host, [job.owner], items[p][1].input_sha256, self.manager.blobs)
                retried = self.executor.check_batch(job.envelope, [items[p][1] for p in missing], now_ms)
                batch.subtasks += retried.subtasks
                batch.refused = [r for r in batch.refused if r[0] not in missing]
                batch.refused += [(missing[p], reason) for p, reason in retried.refused]
        except RefusedWork as exc:
            await self._refuse(job, [ref for ref, _ in items], exc.reason)
            return
        except (PeerUnavailableError, WireError) as exc:
            log.debug("stolen work from %s: %s", job.owner, exc)
            return  # the leases lapse and the owner hands the replicas out again
        if batch.refused:
            await self._refuse(job, [items[p][0] for p, _ in batch.refused], batch.refused[0][1])
        if batch.subtasks:
            try:
                results = await self.executor.run_batch(batch.manifest, batch.subtasks)
            except RefusedWork as exc:  # a blob vanished from our store since the check
                await self._refuse(job, [ReplicaRef(s.index, s.replica) for s in batch.subtasks], exc.reason)
                return
            assert self._nursery is not None
            self._nursery.start_soon(self._push, job, results)

    async def _refuse(self, job: StolenJob, refs: list[ReplicaRef], reason: str) -> None:
        log.warning("refused %d replicas of job %s from %s: %s", len(refs), job.manifest.job_id.hex()[:12], job.owner, reason)
        job.held.difference_update(refs)
        self._backoff[job.owner] = time.monotonic() + REFUSAL_BACKOFF
        try:
            await self.client.refuse(job.owner, job.manifest.job_id, refs, reason)
        except (PeerUnavailableError, WireError) as exc:
            log.debug("telling %s why: %s", job.owner, exc)

    # --- results --------------------------------------------------------------------------------

    async def _push(self, job: StolenJob, results: list[SignedResult]) -> None:
        acked = await self._deliver(job.owner, [pushed_result(r.envelope, r.output) for r in results])
        job.held.difference_update(ReplicaRef(index, replica) for _, index, replica in acked)
        self._forget_if_done(job)

    async def _deliver(self, owner: PeerId, pushed: list[PushedResult]) -> list[tuple[bytes, int, int]]:
        """Push results to their owner in messages of a bounded size; forget from the outbox what it
        acknowledged (any answer ends the retries) and return those (job ID, index, replica)."""
        acked: list[tuple[bytes, int, int]] = []
        for batch in _by_size(pushed):
            try:
                ack = await self.client.push(owner, ResultPush(results=tuple(batch)))
            except (PeerUnavailableError, WireError) as exc:
                log.debug("results to %s wait in the outbox: %s", owner, exc)
                break
            keys = [(a.job_id, a.index, a.replica) for a in ack.acks]
            await trio.to_thread.run_sync(self.manager.store.outbox_ack_many, keys)
            acked += keys
        return acked

    def _forget_if_done(self, job: StolenJob) -> None:
        if not job.queued and not job.held and self._stolen.get(job.manifest.job_id) is job:
            del self._stolen[job.manifest.job_id]

    async def _retry_outbox(self) -> None:
        """Results whose owner did not acknowledge them yet: push again, with backoff."""
        store = self.manager.store
        while True:
            await trio.sleep(2.0)
            now = time.time()
            by_owner: dict[str, list[PushedResult]] = {}
            for e in await trio.to_thread.run_sync(store.outbox_due, now):
                store.outbox_retry_later(e.job_id, e.index, e.replica, now + min(60.0, 2.0 * 2**e.attempts))
                by_owner.setdefault(e.owner, []).append(pushed_result(e.claim, e.output))
            for owner_text, pushed in by_owner.items():
                owner = PeerId.from_base58(owner_text)
                if owner != self.manager.identity.peer_id and self.host.is_connected(owner):
                    await self._deliver(owner, pushed)

    async def _renewer(self) -> None:
        while True:
            leases = [j.lease_s for j in self._stolen.values() if j.held and j.lease_s > 0]
            self._new_leases = trio.Event()
            with trio.move_on_after(min(leases) / 3 if leases else IDLE_WAIT):
                await self._new_leases.wait()  # a first grant: renew on its own schedule from now on
                continue
            for job in list(self._stolen.values()):
                if job.held and job.lease_s > 0:
                    try:
                        await self.client.renew(job.owner, job.manifest.job_id, sorted(job.held))
                    except (PeerUnavailableError, WireError) as exc:
                        log.debug("lease renewal with %s: %s", job.owner, exc)

    # --- stealing -------------------------------------------------------------------------------

    def _stock(self) -> int:
        """How many stolen replicas to keep queued: ``STOCK_SECONDS`` of work per slot."""
        per_slot = BATCH_FACTOR
        if self._seconds_per_subtask:
            per_slot = max(per_slot, math.ceil(STOCK_SECONDS / self._seconds_per_subtask))
        return min(MAX_STEAL, per_slot * self.slots)

    def _candidates(self) -> list[PeerView]:
        now = time.monotonic()
        views = []
        for v in self._victims():
            if self._backoff.get(v.peer, 0.0) > now:
                continue
            surplus = self._fresh_surplus.get(v.peer, v.surplus)
            if surplus > 0:
                views.append(PeerView(v.peer, surplus, v.rtt_ms, v.rank, v.engine, v.poor))
        return views

    async def _stealer(self) -> None:
        while True:
            stock, queued = self._stock(), self.queued()
            plan = None
            # Our own jobs come first, and are not stolen back; but a job whose every queued
            # replica is bound to other nodes (it waits for peers) must not keep our slots idle.
            me = self.manager.identity.peer_id
            own = any(j.owner.has_work_for(me) for j in self.manager.jobs.values() if not j.owner.finished and not j.paused)
            if queued <= stock // 2 and not own and not self.executor.journal_problem:
                plan = plan_steal(self._candidates(), idle_slots=self.slots, queued=queued, engine=ENGINE_ID,
                                  factor=max(1, stock // self.slots))  # fmt: skip
            if plan is None:
                self._hungry = trio.Event()
                with trio.move_on_after(IDLE_WAIT):
                    await self._hungry.wait()
                continue
            await self.steal_from(plan.victim, min(plan.count, MAX_STEAL))
            self.wake()

    async def steal_from(self, victim: PeerId, n: int) -> int:
        """Ask ``victim`` for up to ``n`` replicas and queue what it grants; how many were queued."""
        self._request_id = next_seq(self._request_id, time.time_ns() // 1_000_000)
        try:
            reply = await self.client.steal(victim, n, self._request_id, ENGINE_ID, queued=self.queued())
        except (PeerUnavailableError, WireError) as exc:
            log.debug("steal from %s: %s", victim, exc)
            self._backoff[victim] = time.monotonic() + 1.0
            return 0
        self._fresh_surplus[victim] = reply.surplus
        if reply.refused:
            self._backoff[victim] = time.monotonic() + 1.0
        before = self.queued()
        for grant in reply.grants:
            await self._accept(victim, grant, reply.lease_ms / 1000)
        return self.queued() - before

    async def _accept(self, victim: PeerId, grant: JobGrant, lease_s: float) -> None:
        """Queue a granted batch, once its manifest is opened and its module is here."""
        try:
            manifest = self.executor.verified_manifest(grant.manifest)
            items = []
            for data in grant.subtasks:
                s = wire.decode(data, Subtask)  # checked against the manifest when it runs
                items.append((ReplicaRef(s.index, s.replica), s))
        except (RefusedWork, WireError) as exc:  # the leases lapse at the owner, if there is one
            log.warning("dropped a malformed grant from %s: %s", victim, exc)
            self.dropped["bad_grant"] += 1
            self._backoff[victim] = time.monotonic() + REFUSAL_BACKOFF
            return
        job = self._stolen.get(manifest.job_id)
        if job is None:
            job = self._stolen[manifest.job_id] = StolenJob(manifest.owner, grant.manifest, manifest, lease_s)
            self._new_leases.set()
        job.held.update(ref for ref, _ in items)
        try:  # before fetching anything for it
            self.executor.check_owner(manifest.owner)
        except RefusedWork as exc:
            await self._refuse(job, [ref for ref, _ in items], exc.reason)
            self._backoff[victim] = time.monotonic() + REFUSAL_BACKOFF
            self._forget_if_done(job)
            return
        try:
            await fetch_from_any(self.host, list(dict.fromkeys([victim, manifest.owner])), manifest.module_sha256, self.manager.blobs)
        except (PeerUnavailableError, WireError) as exc:
            await self._refuse(job, [ref for ref, _ in items], f"cannot fetch the module: {exc}"[:300])
            self._forget_if_done(job)
            return
        job.queued.extend(items)

    async def resteal(self, thief: PeerId, ask: StealAsk) -> StealReply | None:
        """Serve a starving thief from the cold end of our stolen stock, through the owner.

        Only a thief with nothing queued is served, and only from what exceeds one
        replica per slot here, so two thieves never pass replicas back and forth.
        When the thief is the owner of that work, it gets the replicas back unrun
        (it runs them from its own deque) instead of a transfer to itself.
        """
        n = grant_limit(ask.n, self.surplus())
        donor = next((j for j in reversed(self._stolen.values()) if j.queued), None)
        if n <= 0 or donor is None or ask.queued > 0:
            return None
        items = [donor.queued.pop() for _ in range(min(n, len(donor.queued)))]
        refs = [ref for ref, _ in items]
        if donor.owner == thief:
            await self._hand_back(donor, refs)
            return None
        try:
            reply = await self.client.transfer(donor.owner, donor.manifest.job_id, thief, refs)
        except (PeerUnavailableError, WireError) as exc:
            log.debug("handing work to %s through %s: %s", thief, donor.owner, exc)
            reply = None
        moved = set() if reply is None else {ReplicaRef(r.index, r.replica) for r in reply.replicas}
        donor.queued.extend(reversed([item for item in items if item[0] not in moved]))
        if not moved or reply is None:
            return None
        donor.held.difference_update(moved)
        subtasks = tuple(wire.encode(s) for ref, s in reversed(items) if ref in moved)  # canonical: the bytes we got
        log.debug("handed %d replicas of job %s to %s", len(moved), donor.manifest.job_id.hex()[:12], thief)
        return StealReply(request_id=ask.request_id, grants=(JobGrant(manifest=donor.envelope, subtasks=subtasks),),
                          lease_ms=reply.lease_ms, refused="", surplus=self.surplus())  # fmt: skip

    async def _hand_back(self, job: StolenJob, refs: list[ReplicaRef]) -> None:
        """Give unstarted replicas back to their owner, which has idle slots (an empty reason: no refusal)."""
        job.held.difference_update(refs)
        try:
            await self.client.refuse(job.owner, job.manifest.job_id, refs, "")
        except (PeerUnavailableError, WireError) as exc:  # the leases lapse and it gets them back anyway
            log.debug("handing replicas back to %s: %s", job.owner, exc)
        self._forget_if_done(job)


def _by_size(results: list[PushedResult]) -> Iterator[list[PushedResult]]:
    """Split results into messages of at most ``PUSH_BYTES`` of outputs (and the protocol's batch limit)."""
    batch: list[PushedResult] = []
    size = 0
    for r in results:
        n = len(r.output or b"")
        if batch and (size + n > PUSH_BYTES or len(batch) >= MAX_STEAL):
            yield batch
            batch, size = [], 0
        batch.append(r)
        size += n
    if batch:
        yield batch
