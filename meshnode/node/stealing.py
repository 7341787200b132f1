"""The node's executor slots, and the driver of its thief (``core/thief.py``).

Theory of operation:

*Slots.* Each of the node's slots runs one chunk of replicas at a time: its own
jobs' replicas first, then replicas it stole. A chunk of its own jobs is sized
to about ``CHUNK_SECONDS`` of work from the module's measured time per subtask,
so that a trivial subtask costs a small share of one thread hop and one journal
commit, and a long one runs alone; the thief sizes the chunks of stolen work
the same way.

*The thief.* What the node took from other owners - its stock, what runs, what
waits for an acknowledgement, whom it backs off from - is the ``Thief`` state
machine's. ``Workers`` feeds it events (grants, chunks that ended, answers,
revocations, the clock) and carries out every instruction it returns in one
place (``_carry``): pushes, dropped results, renewals, refusals, in the
background; and gives back to its caller the few a caller carries out itself
(a chunk to run, a steal to send, a transfer to ask, a hand-over to answer).

*Stealing.* One stealer asks the thief whether and from whom to steal, sends the
request, and feeds the answer back. A grant is queued once its manifest is
opened, its owner trusted and its module here; work from an owner this node
does not trust, or that fails its checks, is refused and the owner told why.

*Results and leases.* Each chunk's results go to the outbox (journal) and
are pushed to their owner at once, in one message; what the owner does not
acknowledge is pushed again with backoff. The thief renews every lease the node
holds, one message per job every third of the lease. A replica its owner
revoked is never started again, and its result is neither pushed nor kept.

*Stealing from thieves.* A starving thief is served from the cold end of the
stock, through the owner (``TransferAsk``); the owner itself, idle at the end
of its job, gets back the replicas it may run, unrun, the same way.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, assert_never

import trio

from ..core import wire
from ..core.job import ReplicaRef
from ..core.job_messages import JobGrant, PushedResult, ResultPush, StealAsk, StealReply
from ..core.manifest import JobManifest, Subtask
from ..core.output_codec import pushed_result
from ..core.peer_id import PeerId
from ..core.steal import PeerView
from ..core.thief import (
    CHUNK_BUDGET, CHUNK_SECONDS, MAX_CHUNK, MAX_STEAL, REFUSAL_BACKOFF, Acknowledged, AskTransfer, ChunkDone,
    ChunkFailed, DropResults, Granted, HandOver, Instruction, LookForWork, OwnerLeft, PresenceHeard, PushResults,
    Ready, Refused, RenewLeases, RestealAsked, Revoked, RunChunk, StealAnswered, StealFailed, StealFrom, TakeChunk,
    TellOwner, Thief, Tick, TransferAnswered, refs_of,
)  # fmt: skip
from ..errors import MeshError, PeerUnavailableError, RefusedWork, WireError
from ..net.blob_protocol import fetch_from_any
from ..net.host import MeshHost
from ..net.job_protocol import JobClient
from ..sandbox.runtime import ENGINE_ID
from .executing import INPUT_MISSING, RunResult
from .owning import JobManager, RunningJob

__all__ = ["Workers"]

log = logging.getLogger("meshnode")

PUSH_BYTES: Final = 16 << 20  # outputs per result message
IDLE_WAIT: Final = 0.5  # an idle slot or stealer looks again at least this often
REFUSAL_REASONS_KEPT: Final = 20  # distinct reasons counted in Workers.refused and .steal_failures (error texts vary)
MODULE_FETCH_ROUNDS: Final = 4  # rounds of asking for a module before its work is refused ...
MODULE_FETCH_PAUSE: Final = 1.0  # ... seconds before the second round, doubling, each stretched by +-50 %
MODULE_FETCH_OTHERS: Final = 2  # peers asked in each round besides the victim and the owner
# A thief hears of an owner's work by gossip, often before it has a connection to the owner: it asks for the
# dial and waits for it this long (looking every CONNECT_POLL s) before it sends the steal. Sent at once, the
# steal failed and the victim was left alone for a second: 171 such failures in the first 10 s of a job on
# 50 nodes, which had then run 103 of its 4,000 replicas.
CONNECT_WAIT: Final = 5.0
CONNECT_POLL: Final = 0.05

# What a caller of ``_carry`` carries out itself.
Answer = RunChunk | StealFrom | AskTransfer | HandOver


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
        self.thief = Thief(manager.identity.peer_id, slots)
        self._victims = victims
        self._set_idle = set_idle
        self.dropped: Counter[str] = Counter() if dropped is None else dropped
        self.refused: Counter[str] = Counter()  # replicas of other owners' jobs refused here, by reason
        self.renewals_failed = 0  # lease renewals no owner answered: why work taken here may lapse
        # steal requests sent: "asked"; of those "failed" (no answer) and "refused"; replicas "granted"
        self.steals: Counter[str] = Counter()
        self.steal_failures: Counter[str] = Counter()  # why steals failed: the error, the victim's ID left out
        self._busy = 0
        self._results: dict[tuple[bytes, ReplicaRef], RunResult] = {}  # ran, not yet pushed
        self._outgoing: dict[PeerId, list[PushedResult]] = {}  # to push, by owner, once its push under way ends
        self._pushing: set[PeerId] = set()  # owners a push is under way to
        self._own_backoff: dict[bytes, float] = {}  # own jobs whose subtasks failed to start here
        self._work = trio.Event()  # something to run appeared
        self._hungry = trio.Event()  # a slot found nothing to run, or the stock ran low
        self._granted = trio.Event()  # work came in: the next renewal may be due sooner
        self._nursery: trio.Nursery | None = None
        self.on_accepted: Callable[[PeerId], None] = lambda owner: None  # an owner accepted results of ours
        # a peer we have something to ask (work to steal, results to push) is not connected: the node dials it
        self.want: Callable[[PeerId], None] = lambda peer: None

    # --- wiring ---------------------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery) -> None:
        """Send what the thief says (pushes, renewals, refusals) from tasks in ``nursery``; ``run`` does this itself."""
        self._nursery = nursery

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.attach(nursery)
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
        """A peer's presence, advertising surplus, is newer than what its last steal answer said."""
        self._carry(self.thief.handle(PresenceHeard(peer)))
        self._hungry.set()

    def peer_gone(self, peer: PeerId) -> None:
        """Drop the work of an owner that left: nobody would take its results."""
        self.client.forget(peer)
        self._carry(self.thief.handle(OwnerLeft(peer)))

    async def revoked(self, owner: PeerId, job_id: bytes, replicas: tuple[ReplicaRef, ...], reason: str) -> None:
        """The owner of work this node holds revoked some of it (the message came from the owner itself)."""
        self._carry(self.thief.handle(Revoked(owner, job_id, replicas, reason)))

    def queued(self) -> int:
        return self.thief.queued()

    def surplus(self) -> int:
        """Stolen replicas this node could give a starving peer: all it holds beyond one per slot."""
        return self.thief.surplus()

    # --- the thief's instructions ---------------------------------------------------------------

    def _carry(self, instructions: Sequence[Instruction]) -> list[Answer]:
        """Carry out what the thief said; return what the caller carries out itself (see ``Answer``)."""
        answers: list[Answer] = []
        for i in instructions:
            match i:
                case RunChunk() | StealFrom() | AskTransfer() | HandOver():
                    answers.append(i)
                case PushResults():
                    self._spawn(self._push, i)
                case DropResults():
                    self._drop(i)
                case RenewLeases():
                    self._spawn(self._renew, i)
                case TellOwner():
                    self._spawn(self._tell, i)
                case _:
                    assert_never(i)
        return answers

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        if self._nursery is None:
            raise RuntimeError("the workers are not running")
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    async def _push(self, i: PushResults) -> None:
        """Push results to their owner. One push per owner is under way at a time; results that come
        meanwhile go with the next one, so a busy thief sends a few large messages, not one per chunk
        (each message costs both nodes about a millisecond of Python in Noise and Yamux)."""
        results = [r for r in (self._results.pop((i.job_id, ref), None) for ref in i.replicas) if r is not None]
        self._outgoing.setdefault(i.owner, []).extend(pushed_result(r.encoded, r.packed) for r in results)
        if i.owner in self._pushing:
            return  # the push under way sends them next
        self._pushing.add(i.owner)
        try:
            while batch := self._outgoing.pop(i.owner, None):
                await self._deliver(i.owner, batch)
        finally:
            self._pushing.discard(i.owner)

    def _drop(self, i: DropResults) -> None:
        """Results of revoked replicas: never pushed, and gone from the outbox."""
        for ref in i.replicas:
            self._results.pop((i.job_id, ref), None)
        keys = [(i.job_id, ref.index, ref.replica) for ref in i.replicas]
        if self._nursery is not None:
            self._nursery.start_soon(self._forget_outbox, keys)

    async def _forget_outbox(self, keys: list[tuple[bytes, int, int]]) -> None:
        try:
            await trio.to_thread.run_sync(self.manager.store.outbox_ack_many, keys)
        except MeshError as exc:
            log.debug("revoked results stay in the outbox: %s", exc)  # the owner answers "late"

    async def _renew(self, i: RenewLeases) -> None:
        try:
            await self.client.renew(i.owner, i.job_id, list(i.replicas))
        except (PeerUnavailableError, WireError) as exc:
            self.renewals_failed += 1
            self.executor.metrics.lease_renewals_failed.inc()
            log.debug("lease renewal with %s: %s", i.owner, exc)

    async def _tell(self, i: TellOwner) -> None:
        if i.reason:
            fields = {"event": "subtasks_refused", "job": i.job_id.hex(), "peer": str(i.owner),
                      "replicas": len(i.replicas), "reason": i.reason}  # fmt: skip
            log.warning("refused %d replicas of job %s from %s: %s", len(i.replicas), i.job_id.hex()[:12], i.owner,
                        i.reason, extra=fields)  # fmt: skip
            self.executor.metrics.subtasks_refused.inc(len(i.replicas))
            kept = i.reason in self.refused or len(self.refused) < REFUSAL_REASONS_KEPT
            self.refused[i.reason if kept else "other reasons"] += len(i.replicas)
        try:
            await self.client.refuse(i.owner, i.job_id, list(i.replicas), i.reason)
        except (PeerUnavailableError, WireError) as exc:  # the leases lapse and the owner gets them back anyway
            log.debug("telling %s about %d replicas: %s", i.owner, len(i.replicas), exc)

    # --- slots ----------------------------------------------------------------------------------

    async def _slot(self) -> None:
        fed = _Done()  # this slot's last results to its own job, being journalled
        while True:
            try:
                if await self._run_own(fed) or await self._run_stolen(fed):
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

    async def _run_own(self, fed: _Done) -> bool:
        """Run a chunk of our own jobs, if any has work for us. Its results are fed to the job while the
        slot runs its next chunk: feeding journals the verdicts, and a slot waiting for that sat idle a
        sixth of the time. At most one feed per slot is under way."""
        now = time.monotonic()
        for job in list(self.manager.jobs.values()):
            if job.owner.finished or self._own_backoff.get(job.job_id, 0.0) > now:
                continue
            sharing = self.slots * (1 + len(self._victims()))  # every node's slots, roughly
            n = self._chunk(job.manifest.module_sha256, job.owner.surplus(), sharing)
            grant = await self.manager.take(job, n, time.monotonic())
            if grant is not None and grant.replicas:
                with self._occupied():
                    try:
                        results = await self.manager.run_own(job, grant)
                    except MeshError as exc:  # our own blobs are damaged: leave it to peers for a while
                        log.warning("job %s: cannot run its subtasks here: %s", job.job_id.hex()[:12], exc)
                        self._own_backoff[job.job_id] = time.monotonic() + REFUSAL_BACKOFF
                        return True
                await fed.wait()
                fed.reset()
                self._spawn(self._feed, job, results, fed)
                return True
        return False

    async def _feed(self, job: RunningJob, results: list[RunResult], fed: _Done) -> None:
        try:
            await self.manager.feed_own(job, results)
        finally:
            fed.set()

    async def _run_stolen(self, kept: _Done) -> bool:
        for run in self._carry(self.thief.handle(TakeChunk(time.monotonic()))):
            assert isinstance(run, RunChunk)
            if self.thief.queued() <= self.thief.stock() // 2:
                self._hungry.set()  # restock while this chunk runs
            with self._occupied():
                await self._run_chunk(run, kept)
            return True
        return False

    async def _run_chunk(self, run: RunChunk, kept: _Done) -> None:
        """Check and run a chunk of stolen work. Its results are journalled (outbox, cache) and then pushed
        while the slot runs its next chunk; at most one chunk per slot waits for that."""
        owner = self.thief.owner_of(run.job_id)
        refs = refs_of(run.subtasks)
        if owner is None:  # its owner left while the chunk waited for a slot
            self._carry(self.thief.handle(ChunkFailed(run.job_id, refs)))
            return
        started = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        try:
            batch = self.executor.check_batch(run.envelope, list(run.subtasks), now_ms)
            missing = [p for p, reason in batch.refused if reason == INPUT_MISSING]
            if missing:  # inputs too large to travel inline: fetch them by hash, then check again
                for p in missing:
                    await fetch_from_any(self.host, [owner], run.subtasks[p].input_sha256, self.manager.blobs)
                retried = self.executor.check_batch(run.envelope, [run.subtasks[p] for p in missing], now_ms)
                batch.subtasks += retried.subtasks
                batch.refused = [r for r in batch.refused if r[0] not in missing]
                batch.refused += [(missing[p], reason) for p, reason in retried.refused]
        except RefusedWork as exc:
            self._carry(self.thief.handle(Refused(owner, run.job_id, refs, exc.reason, time.monotonic())))
            return
        except (PeerUnavailableError, WireError) as exc:
            log.debug("stolen work from %s: %s", owner, exc)
            self._carry(self.thief.handle(ChunkFailed(run.job_id, refs)))  # the leases lapse at the owner
            return
        if batch.refused:
            bad = tuple(refs[p] for p, _ in batch.refused)
            self._carry(self.thief.handle(Refused(owner, run.job_id, bad, batch.refused[0][1], time.monotonic())))
        if not batch.subtasks:
            return
        try:
            results = await self.executor.run_batch(batch.manifest, batch.subtasks, keep=False, budget=CHUNK_BUDGET)
        except RefusedWork as exc:  # a blob vanished from our store, or the sandbox process died
            refused = Refused(owner, run.job_id, refs_of(batch.subtasks), exc.reason, time.monotonic())
            self._carry(self.thief.handle(refused))
            return
        for r in results:
            self._results[(run.job_id, ReplicaRef(r.claim.index, r.claim.replica))] = r
        done = {(r.claim.index, r.claim.replica) for r in results}
        ran = tuple(ReplicaRef(s.index, s.replica) for s in batch.subtasks if (s.index, s.replica) in done)
        unrun = tuple(s for s in batch.subtasks if (s.index, s.replica) not in done)
        seconds = time.perf_counter() - started
        await kept.wait()
        kept.reset()
        self._spawn(self._keep_then_push, run.job_id, ran, unrun, seconds, kept)

    async def _keep_then_push(
        self, job_id: bytes, ran: tuple[ReplicaRef, ...], unrun: tuple[Subtask, ...], seconds: float, kept: _Done
    ) -> None:  # fmt: skip
        try:
            await self.executor.keep_pending()
        finally:
            kept.set()
        # it says: push them; and hand the unrun ones back
        self._carry(self.thief.handle(ChunkDone(job_id, ran, seconds, time.monotonic(), unrun)))

    # --- results --------------------------------------------------------------------------------

    async def _deliver(self, owner: PeerId, pushed: list[PushedResult]) -> list[tuple[bytes, int, int]]:
        """Push results to their owner in messages of a bounded size; forget from the outbox what it
        acknowledged (any answer ends the retries), tell the thief, and return those (job ID, index, replica)."""
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
            if any(a.status == "accepted" for a in ack.acks):
                self.on_accepted(owner)
        by_job: dict[bytes, list[ReplicaRef]] = {}
        for job_id, index, replica in acked:
            by_job.setdefault(job_id, []).append(ReplicaRef(index, replica))
        for job_id, refs in by_job.items():
            self._carry(self.thief.handle(Acknowledged(job_id, tuple(refs))))
        return acked

    async def _retry_outbox(self) -> None:
        """Results whose owner did not acknowledge them yet: push again, with backoff."""
        store = self.manager.store
        while True:
            await trio.sleep(2.0)
            now = time.time()
            by_owner: dict[str, list[PushedResult]] = {}
            try:
                due = await trio.to_thread.run_sync(store.outbox_due, now)
                for e in due:
                    store.outbox_retry_later(e.job_id, e.index, e.replica, now + min(60.0, 2.0 * 2**e.attempts))
                    by_owner.setdefault(e.owner, []).append(PushedResult(claim=e.claim, output=e.output, codec=e.codec))
            except MeshError as exc:  # the journal refuses: try again later
                log.debug("outbox: %s", exc)
                continue
            for owner_text, pushed in by_owner.items():
                owner = PeerId.from_base58(owner_text)
                if owner == self.manager.identity.peer_id:
                    continue
                if self.host.is_connected(owner):
                    await self._deliver(owner, pushed)
                else:
                    self.want(owner)

    async def _renewer(self) -> None:
        while True:
            due = self.thief.next_renewal()
            wait = IDLE_WAIT if due is None else max(0.0, due - time.monotonic())
            self._granted = trio.Event()
            with trio.move_on_after(min(wait, IDLE_WAIT)):
                await self._granted.wait()  # a new job's leases: renew on its own schedule from now on
                continue
            self._carry(self.thief.handle(Tick(time.monotonic())))

    # --- stealing -------------------------------------------------------------------------------

    async def _stealer(self) -> None:
        while True:
            # Our own jobs come first, and are not stolen back; but a job whose every queued
            # replica is bound to other nodes (it waits for peers) must not keep our slots idle.
            me = self.manager.identity.peer_id
            own = any(j.owner.has_work_for(me) for j in self.manager.jobs.values() if not j.owner.finished and not j.paused)
            look = LookForWork(tuple(self._victims()), own, not self.executor.journal_problem, ENGINE_ID,
                               time.monotonic(), time.time_ns() // 1_000_000)  # fmt: skip
            steals = [s for s in self._carry(self.thief.handle(look)) if isinstance(s, StealFrom)]
            if not steals:
                self._hungry = trio.Event()
                now = time.monotonic()
                ends = self.thief.next_backoff_end(now)  # a victim that held us back may have work for us then
                with trio.move_on_after(IDLE_WAIT if ends is None else min(IDLE_WAIT, ends - now)):
                    await self._hungry.wait()
                continue
            for steal in steals:
                await self._connect_first(steal.victim)
                await self._steal(steal)
            self.wake()

    async def _connect_first(self, victim: PeerId) -> None:
        """Have the node dial ``victim`` if it is not connected, and wait for the connection (at most
        ``CONNECT_WAIT`` s: then the steal fails as before, and the thief backs off)."""
        if self.host.is_connected(victim):
            return
        self.want(victim)
        with trio.move_on_after(CONNECT_WAIT):
            while not self.host.is_connected(victim):
                await trio.sleep(CONNECT_POLL)

    async def steal_from(self, victim: PeerId, n: int) -> int:
        """Ask ``victim`` for up to ``n`` replicas and queue what it grants; how many were queued."""
        before = self.thief.queued()
        request_id = self.thief.next_request_id(time.time_ns() // 1_000_000)
        await self._steal(StealFrom(victim, min(n, MAX_STEAL), request_id, before))
        return self.thief.queued() - before

    async def _steal(self, steal: StealFrom) -> None:
        self.steals["asked"] += 1
        try:
            reply = await self.client.steal(steal.victim, steal.n, steal.request_id, ENGINE_ID, queued=steal.queued,
                                            runtimes=self.executor.runtimes())  # fmt: skip
        except (PeerUnavailableError, WireError) as exc:
            log.debug("steal from %s: %s", steal.victim, exc)
            if not self.host.is_connected(steal.victim):
                self.want(steal.victim)
            self.executor.metrics.stole("thief", 0)
            self.steals["failed"] += 1
            reason = str(exc).replace(str(steal.victim), "<peer>")[:160]
            kept = reason in self.steal_failures or len(self.steal_failures) < REFUSAL_REASONS_KEPT
            self.steal_failures[reason if kept else "other reasons"] += 1
            self._carry(self.thief.handle(StealFailed(steal.victim, time.monotonic())))
            return
        granted = sum(len(g.subtasks) for g in reply.grants)
        self.executor.metrics.stole("thief", granted)
        self.steals["refused"] += bool(reply.refused)
        self.steals["granted"] += granted
        answered = StealAnswered(steal.victim, reply.surplus, bool(reply.refused), granted, time.monotonic())
        self._carry(self.thief.handle(answered))
        for grant in reply.grants:
            await self._accept(steal.victim, grant, reply.lease_ms / 1000)

    async def _accept(self, victim: PeerId, grant: JobGrant, lease_s: float) -> None:
        """Queue a granted batch, once its manifest is opened, its owner trusted and its module here."""
        try:
            manifest = self.executor.verified_manifest(grant.manifest)
            subtasks = tuple(wire.decode(data, Subtask) for data in grant.subtasks)  # checked against it when run
        except (RefusedWork, WireError) as exc:  # the leases lapse at the owner, if there is one
            log.warning("dropped a malformed grant from %s: %s", victim, exc,
                        extra={"event": "message_dropped", "peer": str(victim), "reason": "bad_grant"})  # fmt: skip
            self.dropped["bad_grant"] += 1
            self._carry(self.thief.handle(StealFailed(victim, time.monotonic(), malformed=True)))
            return
        refs = refs_of(subtasks)
        try:  # before fetching anything for it
            self.executor.check_owner(manifest.owner)
        except RefusedWork as exc:
            self._carry(self.thief.handle(Refused(manifest.owner, manifest.job_id, refs, exc.reason, time.monotonic())))
            return
        self.executor.sandbox.warm()  # its sandbox processes start while the work is queued
        # held (and renewed) from now on, run once the module is here
        ready = self.manager.blobs.has(manifest.module_sha256) or self._keep_module(victim, manifest, grant.module)
        granted = Granted(victim, manifest.owner, manifest.job_id, grant.manifest, lease_s, subtasks, time.monotonic(), ready)
        self._carry(self.thief.handle(granted))
        self._granted.set()
        if ready:
            return
        try:
            await self._fetch_module(victim, manifest.owner, manifest.module_sha256)
        except (PeerUnavailableError, WireError) as exc:
            reason = f"cannot fetch the module: {exc}"[:300]
            refused = Refused(manifest.owner, manifest.job_id, refs, reason, time.monotonic(), passing=True)
            self._carry(self.thief.handle(refused))
            return
        self._carry(self.thief.handle(Ready(manifest.job_id)))
        self.wake()

    def _keep_module(self, victim: PeerId, manifest: JobManifest, module: bytes) -> bool:
        """Store a module that came in a grant, if it is the manifest's; else it is fetched by hash."""
        if not module:
            return False
        if len(module) != manifest.module_size or hashlib.sha256(module).digest() != manifest.module_sha256:
            self.dropped["bad_inline_module"] += 1
            log.debug("a grant from %s carried a module that is not its manifest's; fetching it by hash", victim)
            return False
        try:
            self.manager.blobs.put(module)
        except (OSError, ValueError) as exc:
            log.warning("cannot store the module of job %s: %s", manifest.job_id.hex()[:12], exc)
            return False
        return True

    async def _fetch_module(self, victim: PeerId, owner: PeerId, sha256: bytes) -> None:
        """Fetch a job's module: from the victim, its owner, or a couple of other peers (thieves that have it
        already), in a few rounds with growing, jittered pauses. When dozens of thieves hear of a job at once,
        its owner cannot answer them all (50 nodes on 2 cores: half the thieves failed to open a stream to it,
        refused their grants and ran nothing); the rounds spread them out, and each thief served is one more
        source."""
        for attempt in range(MODULE_FETCH_ROUNDS):
            others = [v.peer for v in self._victims() if v.peer not in (victim, owner)]
            sources = list(dict.fromkeys([victim, owner, *random.sample(others, min(MODULE_FETCH_OTHERS, len(others)))]))
            try:
                await fetch_from_any(self.host, sources, sha256, self.manager.blobs)
                return
            except PeerUnavailableError as exc:
                if attempt + 1 == MODULE_FETCH_ROUNDS:
                    raise
                log.debug("module %s: %s; trying again", sha256.hex()[:16], exc)
            await trio.sleep(MODULE_FETCH_PAUSE * 2**attempt * random.uniform(0.5, 1.5))

    async def resteal(self, thief: PeerId, ask: StealAsk) -> StealReply | None:
        """Serve a starving thief from the cold end of our stolen stock, through the owner (see the thief)."""
        if set(self.executor.runtimes()) - set(ask.runtimes):
            return None  # it might be handed work it cannot run: only owners, who know each job's runtime, serve it
        for answer in self._carry(self.thief.handle(RestealAsked(thief, ask.n, ask.queued))):
            assert isinstance(answer, AskTransfer)
            try:
                reply = await self.client.transfer(answer.owner, answer.job_id, thief, list(answer.replicas))
                moved = tuple(ReplicaRef(r.index, r.replica) for r in reply.replicas)
                lease_ms = reply.lease_ms
            except (PeerUnavailableError, WireError) as exc:
                log.debug("handing work to %s through %s: %s", thief, answer.owner, exc)
                moved, lease_ms = (), 0
            answered = TransferAnswered(answer.job_id, thief, answer.replicas, moved, lease_ms)
            for hand in self._carry(self.thief.handle(answered)):
                assert isinstance(hand, HandOver)
                log.debug("handed %d replicas of job %s to %s", len(hand.subtasks), hand.job_id.hex()[:12], thief)
                # the module goes by hash here: the new thief fetches it from us or the owner
                grant = JobGrant(manifest=hand.envelope, subtasks=tuple(wire.encode(s) for s in hand.subtasks), module=b"")
                return StealReply(request_id=ask.request_id, grants=(grant,), lease_ms=hand.lease_ms, refused="",
                                  surplus=self.thief.surplus())  # fmt: skip
        return None


class _Done:
    """A flag a task sets when it ends, that can be waited for and set up again (``trio.Event`` cannot)."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def set(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event = trio.Event()


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
