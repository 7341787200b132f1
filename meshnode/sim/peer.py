"""A simulated node: its slots, its thief, the jobs it owns and its outbox, driven on virtual time.

Theory of operation:

This is a second driver of the core's state machines, beside the real one
(``node/stealing.py`` for the ``Thief``, ``node/owning.py`` and
``node/job_service.py`` for each ``JobOwner``, ``node/mesh_node.py`` for the
peer table and the clock). It feeds them the same events and carries out every
instruction they return - the thief's in ``_carry``, the owner's in
``OwnedJob.drive``, the table's in ``OwnerTable`` - and raises on one it does
not know. Where the real node awaits the network, this one sends a message and
carries on when the answer (or its failure) arrives:

    real node                                  here
    -----------------------------------------  -----------------------------------------------
    a slot runs its own job's chunk, then the  ``_fill``: the same order; a chunk's run is an
    thief's (``Workers._slot``)                event its run time later
    the stealer asks ``LookForWork`` and       ``_look``, when a slot finds nothing, a steal
    steals (``Workers._stealer``), and looks   ends, a backoff ends, or gossip brings news of
    again every half second while it starves   work (looking in between would find the same)
    results go to the outbox and are pushed,   ``outbox.py``: the outbox survives a crash, as
    again with backoff until acknowledged      the journal does
    the renewer ticks the thief when due       ``_renew``
    the owner side serves steals, pushes,      ``on_steal_ask``, ``on_push``, ``on_renew``,
    renewals, refusals, transfers              ``on_tell``, ``on_transfer_ask``
    a victim with nothing of its own serves    ``_resteal``: the steal is answered once the
    a starving thief through the owner         owner answered the transfer
    ticks: the peer table and every job        ``_tick``, every 0.25 s while a job runs

A run's result comes from ``behaviour.py``: the subtask's true result, or what
this peer's behaviour makes of it. Its time is the subtask's cost times the
scenario's mean run time times this peer's speed.

*Crashes.* ``crash`` ends the incarnation: every event and message meant for
it is dropped (each carries the epoch it was meant for), and ``start`` begins a
new one with fresh memory: a new ``Thief``, reputations and the trust book as
last saved (the real node saves them the moment it catches someone lying, and
every minute verdicts change them), the jobs it owns rebuilt from their
journals, and the outbox as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

from ..core.adaptive import AdaptivePolicy, TrustBook
from ..core.job import (
    ClaimReceived, PeerLeft, ReleaseReplicas, RenewLeases as RenewEvent, Reopen, ReplicaRef, Revoke, StealRequest,
    Tick as JobTick, TransferReplicas,
)  # fmt: skip
from ..core.manifest import Subtask
from ..core.peer_id import PeerId
from ..core.reputation import Reputation
from ..core.result import ResultClaim
from ..core.steal import POOR_SCORE, PeerView, grant_for
from ..core.thief import (
    CHUNK_SECONDS, MAX_CHUNK, Acknowledged, AskTransfer, ChunkDone, ChunkFailed, DropResults,
    Granted, HandOver, Instruction, LookForWork, OwnerLeft, PresenceHeard, PushResults, RenewLeases, RestealAsked,
    Revoked, RunChunk, StealAnswered, StealFailed, StealFrom, TakeChunk, TellOwner, Thief, Tick, TransferAnswered,
    refs_of,
)  # fmt: skip
from .behaviour import ENGINE, Behaviour, claim_of
from .liveness import OwnerTable
from .network import Call
from .outbox import Outbox
from .owning import JobJournal, OwnedJob
from .presence import Publisher
from .scenario import PeerProfile
from .world import World, unknown

__all__ = ["SimPeer", "StealAnswer", "WorkGrant"]

# As the real node's (node/mesh_node.py):
TICK_BUSY: Final = 0.25  # the owner's tick while a job runs ...
TICK_IDLE: Final = 1.0  # ... and otherwise
STANDING_EVERY: Final = 60.0  # reputations and trust are saved this often when verdicts changed them

_HONEST: Final = Behaviour()
_NO_INPUT: Final = bytes(32)  # the simulated inputs' hash (nothing checks it here)

Answer = RunChunk | StealFrom | AskTransfer | HandOver


@dataclass(frozen=True, slots=True)
class WorkGrant:
    """Replicas of one job handed to a thief (its owner is the job's)."""

    job_id: bytes
    subtasks: tuple[Subtask, ...]


@dataclass(frozen=True, slots=True)
class StealAnswer:
    grants: tuple[WorkGrant, ...]
    lease: float  # seconds
    refused: str
    surplus: int

    @property
    def label(self) -> str:
        granted = sum(len(g.subtasks) for g in self.grants)
        return f"refused: {self.refused}" if self.refused else f"{granted} granted, surplus {self.surplus}"


Ack = tuple[bytes, int, int, str]  # job ID, index, replica, status


class SimPeer:
    """One simulated node (see the module docstring)."""

    def __init__(self, world: World, index: int, profile: PeerProfile) -> None:
        self.world, self.index, self.profile = world, index, profile
        self.id = world.ids[index]
        self.slots = profile.slots
        self.label = f"peer {index}"
        self.epoch = 0  # the incarnation: grows at each crash
        self.alive = False
        self.die: Callable[[float | None], None] = lambda down: None  # the simulation's crash, for a torn commit
        self.tear: float | None = None  # set: die in the next commit, for this long (a torn commit)
        self.tear_armed = False
        # What survives a crash: the journal's.
        self.journals: dict[bytes, JobJournal] = {}
        self.outbox = Outbox(world, index, SimPeer.on_push, self._acknowledged)
        self.standing: tuple[Mapping[str, object], Mapping[str, object], float] | None = None  # reputation, trust, when
        self._fresh()

    def _fresh(self) -> None:
        """The memory of a new incarnation."""
        self.thief = Thief(self.id, self.slots)
        # as last saved (``_save_standing``): a crash forgets what verdicts taught since
        s, now = self.world.scenario, self.world.clock.now
        policy = AdaptivePolicy(min_streak=s.min_streak, floor=s.spot_floor)
        self.reputation, self.trust = Reputation(), TrustBook(policy)
        if self.standing is not None:
            reputation, book, saved = self.standing
            self.reputation = Reputation.from_dict(reputation)
            self.trust = TrustBook.from_dict(book, now, away=now - saved, policy=policy)
        self.standing_dirty = False
        self.standing_at = now
        self._barred: frozenset[PeerId] | None = None
        self.jobs: dict[bytes, OwnedJob] = {}
        self.table: OwnerTable | None = None
        self.busy = 0
        self.stealing = False
        self.look_at, self.look_token = math.inf, 0
        self.renew_at, self.renew_token = math.inf, 0
        self.waking = False
        self.answered_at: dict[int, float] = {}  # victims, when they last answered a steal
        self.deferred: list[Call] = []  # steals waiting for an owner's transfer answer
        self.presence: Publisher | None = None
        self.tick_surplus = 0  # the surplus the last tick saw
        self.seconds_per_run: float | None = None
        self.reputation_version = 0  # grows whenever the reputation records something
        self._views_key: tuple[int, int, int] = (-1, -1, -1)
        self._views: tuple[PeerView, ...] = ()

    # --- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start, or restart after a crash: fresh memory, the jobs it owns rebuilt from their journals."""
        w = self.world
        self.alive = True
        w.net.set_up(self.index, True)
        self._fresh()
        for journal in self.journals.values():
            if not journal.ended:
                self.jobs[journal.job_id] = OwnedJob.restore(w, self, journal)
        if self.journals:
            self._open_table()
        self.presence = Publisher(w, self.index, self._surplus, self._idle, self._tick_interval)
        self.presence.publish()
        self._look_soon(w.clock.now)
        self._fill()
        self.outbox.restart(self.epoch)

    def crash(self) -> None:
        """The process dies: nothing in memory survives, nothing meant for this incarnation arrives."""
        self.alive = False
        self.world.net.set_up(self.index, False)
        self.epoch += 1
        for call in self.deferred:
            self.world.net.abandon(call)
        self.deferred = []
        self.jobs = {}
        self.table = None

    def submit(self, job_id: bytes, subtasks: int) -> None:
        """Own a new job (``JobManager.submit``)."""
        w = self.world
        job = OwnedJob.submit(w, self, job_id, subtasks)
        self.jobs[job_id], self.journals[job_id] = job, job.journal
        w.job_owner[job_id] = self.index
        w.checker.job_started(job_id, subtasks)
        if self.table is None:
            self._open_table()
        assert self.presence is not None
        self.presence.change(new_work=True)
        self._fill()

    def cancel(self, job_id: bytes) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.cancel():
            self.world.job_ended(job_id)
            self._after()

    def _open_table(self) -> None:
        w = self.world
        self.table = OwnerTable(w, self.index, self._peer_gone, self.epoch)
        for peer in range(len(w.ids)):
            if peer != self.index and w.net.reachable(self.index, peer):
                self.table.meet(peer)
        w.clock.after(TICK_BUSY, self._tick, self.epoch)

    def _tick(self, epoch: int) -> None:
        """The node's tick (``MeshNode._tick``): the peer table, then every job's leases."""
        if epoch != self.epoch:
            return
        w = self.world
        assert self.table is not None
        self.table.tick()
        for job in list(self.jobs.values()):
            if job.drive(JobTick(w.clock.now)) is None:
                return
        if w.clock.now - self.standing_at >= STANDING_EVERY:
            self._save_standing()
        assert self.presence is not None
        self.presence.sample()  # news of work that came back, or of none left, before the slots take any
        surplus = self._surplus()
        if surplus > self.tick_surplus:
            self._fill()  # replicas came back (a lease lapsed): idle slots look again
        self.tick_surplus = surplus
        self._after()
        busy = any(not j.journal.ended for j in self.jobs.values())
        w.clock.after(TICK_BUSY if busy else TICK_IDLE, self._tick, epoch)

    def _peer_gone(self, peer: int) -> None:
        """The table says ``peer`` left: its leases come back, the work stolen from it is dropped."""
        now = self.world.clock.now
        for job in list(self.jobs.values()):
            if job.drive(PeerLeft(self.world.ids[peer], now)) is None:
                return
        self.owner_left(peer)

    def owner_left(self, peer: int) -> None:
        self.answered_at.pop(peer, None)
        self._carry_all(self.thief.handle(OwnerLeft(self.world.ids[peer])))
        self._after()

    def holds_work_of(self, owner: int) -> bool:
        owner_id = self.world.ids[owner]
        return any(self.thief.owner_of(job_id) == owner_id for job_id in self.thief.held())

    # --- what an owned job needs of its node (owning.OwnerNode) -----------------------------

    def revoke(self, job_id: bytes, revoke: Revoke) -> None:
        if revoke.holder == self.id:
            return  # our own slots' claims come back "late"
        w = self.world
        w.net.send(self.index, w.index_of[revoke.holder], "revoke", SimPeer.on_revoke, self.index, job_id,
                   revoke.replicas, revoke.reason)  # fmt: skip

    def work_added(self) -> None:
        """Replicas were added: peers hear of it, idle slots look again."""
        if self.presence is not None:
            self.presence.change()
        self._wake()

    def _wake(self) -> None:
        """Idle slots look for work again, after the event under way (``Workers.wake``)."""
        if not self.waking:
            self.waking = True
            self.world.clock.after(0.0, self._woken, self.epoch)

    def _woken(self, epoch: int) -> None:
        if epoch == self.epoch:
            self.waking = False
            self._fill()
            self._after()

    def barred_changed(self) -> None:
        self._barred = None

    def reputation_changed(self) -> None:
        self.reputation_version += 1

    def verdict_recorded(self) -> None:
        self.standing_dirty = True

    def _save_standing(self) -> None:
        """Save reputations and the trust book if verdicts changed them (``JobManager.save_standing``)."""
        now = self.world.clock.now
        self.standing_at = now
        if self.standing_dirty:
            self.standing_dirty = False
            self.standing = (self.reputation.to_dict(), self.trust.to_dict(now), now)

    def barred(self) -> frozenset[PeerId]:
        """``Reputation.barred()``, kept until a verdict bars someone (it is a walk over every record)."""
        if self._barred is None:
            self._barred = self.reputation.barred()
        return self._barred

    def distrust(self, peer: PeerId) -> bool:
        """``peer`` disagreed with a verified quorum: what it alone vouched for is suspect, and each running
        job decides its share again (``JobManager._distrust``). False if the node died doing so."""
        self._save_standing()  # a crash must not forget whom it caught
        now = self.world.clock.now
        for journal in list(self.journals.values()):
            indices = journal.suspect(peer)
            job = self.jobs.get(journal.job_id)
            if indices and job is not None and not journal.ended and job.machine.adaptive:
                if job.drive(Reopen(peer, tuple(indices), now)) is None:
                    return False
        return True

    def tearing(self) -> bool:
        if not self.tear_armed:
            return False
        self.tear_armed = False
        self.world.counters.torn_commits += 1
        self.die(self.tear)
        return True

    # --- presence ---------------------------------------------------------------------------

    def _surplus(self) -> int:
        own = sum(j.machine.surplus() for j in self.jobs.values() if not j.machine.finished)
        return own + self.thief.surplus()

    def _idle(self) -> int:
        return self.slots - self.busy

    def _tick_interval(self) -> float:
        return TICK_BUSY if any(not j.journal.ended for j in self.jobs.values()) else TICK_IDLE

    def _after(self) -> None:
        """What the node does after any event: its next tick may see that its work on offer appeared or ran out."""
        if self.alive and self.presence is not None:
            self.presence.poke()

    # --- slots ------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Give every idle slot a chunk: the node's own jobs first, then stolen work (``Workers._slot``)."""
        while self.alive and self.busy < self.slots:
            if not (self._start_own() or self._start_stolen()):
                self._look_soon(self.world.clock.now)  # a slot found nothing: the stealer should look
                return

    def _run_time(self, job_id: bytes, index: int) -> float:
        return self.world.truth(job_id, index).cost * self.world.scenario.run_seconds * self.profile.speed

    def _start_own(self) -> bool:
        for job in self.jobs.values():
            m = job.machine
            if m.finished:
                continue
            sharing = self.slots * (1 + (self.table.alive_count() if self.table is not None else 0))
            seconds = self.seconds_per_run
            by_time = 1 if not seconds else int(CHUNK_SECONDS / seconds)
            grant = job.take(max(1, min(MAX_CHUNK, by_time, m.surplus() // (2 * sharing))))
            if grant is not None and grant.replicas:
                self._run_own(job, grant.replicas)
                return True
        return False

    def _run_own(self, job: OwnedJob, refs: tuple[ReplicaRef, ...]) -> None:
        w = self.world
        self.busy += 1
        seconds = sum(self._run_time(job.job_id, r.index) for r in refs)
        w.clock.after(seconds, self._own_done, self.epoch, job.job_id, refs, seconds)
        third = w.scenario.lease_seconds / 3  # our own leases are renewed while the chunk runs (run_own)
        for k in range(1, math.ceil(seconds / third)):
            w.clock.after(k * third, self._renew_own, self.epoch, job.job_id, refs)

    def _renew_own(self, epoch: int, job_id: bytes, refs: tuple[ReplicaRef, ...]) -> None:
        job = self.jobs.get(job_id) if epoch == self.epoch else None
        if job is not None:
            job.drive(RenewEvent(self.id, refs, self.world.clock.now))

    def _own_done(self, epoch: int, job_id: bytes, refs: tuple[ReplicaRef, ...], seconds: float) -> None:
        if epoch != self.epoch:
            return
        w = self.world
        self.busy -= 1
        self._measured(seconds, len(refs))
        job = self.jobs.get(job_id)
        if job is not None:
            claims = [self._claim(_HONEST, job_id, r) for r in refs]
            w.counters.own_runs += len(claims)
            barred = self.barred()
            if job.drive(*(ClaimReceived(c, w.clock.now, barred) for c in claims)) is None:
                return
        self._fill()
        self._after()

    def _claim(self, behaviour: Behaviour, job_id: bytes, ref: ReplicaRef) -> ResultClaim:
        w = self.world
        claim = claim_of(behaviour, w.truth(job_id, ref.index), job_id, ref.index, ref.replica, self.id, w.rng, w.clock.now)
        w.checker.claimed(claim)
        w.counters.runs += 1
        return claim

    def _measured(self, seconds: float, runs: int) -> None:
        latest = seconds / max(1, runs)
        last = self.seconds_per_run or latest
        self.seconds_per_run = 0.5 * last + 0.5 * latest

    def _start_stolen(self) -> bool:
        for i in self._carry(self.thief.handle(TakeChunk(self.world.clock.now))):
            match i:
                case RunChunk():
                    if self.thief.queued() <= self.thief.stock() // 2:
                        self._look_soon(self.world.clock.now)  # restock while this chunk runs
                    self._run_stolen(i)
                    return True
                case _:
                    raise TypeError(f"TakeChunk answered {i!r}")
        return False

    def _run_stolen(self, run: RunChunk) -> None:
        refs = refs_of(run.subtasks)
        if self.thief.owner_of(run.job_id) is None:  # its owner left while the chunk waited
            self._carry_all(self.thief.handle(ChunkFailed(run.job_id, refs)))
            return
        self.busy += 1
        behaviour = self.profile.behaviour
        if behaviour.kind == "staller" and behaviour.cheats(self.world.clock.now):
            return  # the chunk never ends: its slot stays busy, and the thief renews its leases
        seconds = sum(self._run_time(run.job_id, r.index) for r in refs)
        self.world.clock.after(seconds, self._stolen_done, self.epoch, run.job_id, refs, seconds)

    def _stolen_done(self, epoch: int, job_id: bytes, refs: tuple[ReplicaRef, ...], seconds: float) -> None:
        if epoch != self.epoch:
            return
        self.busy -= 1
        behaviour = self.profile.behaviour
        if behaviour.kind == "lazy" and behaviour.cheats(self.world.clock.now):  # it held the work, ran none of it
            self._carry_all(self.thief.handle(ChunkFailed(job_id, refs)))
        else:
            for r in refs:
                self.outbox.keep(job_id, r, self._claim(behaviour, job_id, r))
            self._carry_all(self.thief.handle(ChunkDone(job_id, refs, seconds, self.world.clock.now)))
        self._fill()
        self._after()

    # --- the thief's instructions -----------------------------------------------------------

    def _carry(self, instructions: Sequence[Instruction]) -> list[Answer]:
        """Carry out what the thief said; return what the caller carries out itself (``Workers._carry``)."""
        w = self.world
        answers: list[Answer] = []
        for i in instructions:
            match i:
                case RunChunk() | StealFrom() | AskTransfer() | HandOver():
                    answers.append(i)
                case PushResults():
                    self.outbox.push(w.index_of[i.owner], i.job_id, i.replicas)
                case DropResults():
                    self.outbox.drop(i.job_id, i.replicas)
                case RenewLeases():
                    w.net.send(self.index, w.index_of[i.owner], "renew", SimPeer.on_renew, self.index, i.job_id,
                               i.replicas)  # fmt: skip
                case TellOwner():
                    w.net.send(self.index, w.index_of[i.owner], "refuse" if i.reason else "release", SimPeer.on_tell,
                               self.index, i.job_id, i.replicas, i.reason)  # fmt: skip
                case _:
                    unknown(i)
        return answers

    def _carry_all(self, instructions: Sequence[Instruction]) -> None:
        """``_carry`` where the thief has nothing to ask of the caller."""
        answers = self._carry(instructions)
        if answers:
            raise TypeError(f"the thief asked the wrong caller for {answers!r}")

    def _acknowledged(self, job_id: bytes, refs: tuple[ReplicaRef, ...]) -> None:
        self._carry_all(self.thief.handle(Acknowledged(job_id, refs)))
        self._after()

    def _renew_soon(self) -> None:
        due = self.thief.next_renewal()
        if due is not None and due < self.renew_at:
            self.renew_at, self.renew_token = due, self.renew_token + 1
            self.world.clock.at(due, self._renew, self.epoch, self.renew_token)

    def _renew(self, epoch: int, token: int) -> None:
        if epoch != self.epoch or token != self.renew_token:
            return
        self.renew_at = math.inf
        self._carry_all(self.thief.handle(Tick(self.world.clock.now)))
        self._renew_soon()

    # --- stealing ---------------------------------------------------------------------------

    def _look_soon(self, when: float) -> None:
        if when < self.look_at:
            self.look_at, self.look_token = when, self.look_token + 1
            self.world.clock.at(when, self._look, self.epoch, self.look_token)

    def _look(self, epoch: int, token: int) -> None:
        """The stealer (``Workers._stealer``): ask the thief whether and whom to steal from."""
        if epoch != self.epoch or token != self.look_token:
            return
        self.look_at = math.inf
        if self.stealing:
            return  # the steal under way looks again when it ends
        w = self.world
        own = any(j.machine.has_work_for(self.id) for j in self.jobs.values() if not j.machine.finished)
        victims = self._victims()
        look = LookForWork(victims, own, True, ENGINE, w.clock.now, w.unix_ms())
        for i in self._carry(self.thief.handle(look)):
            match i:
                case StealFrom():
                    self._steal(i)
                    return
                case _:
                    raise TypeError(f"LookForWork answered {i!r}")
        if own or self.thief.queued() > self.thief.stock() // 2:
            return  # not starving: a slot that runs short says so
        # Starving, and every peer offering work is one the thief backs off from or whose last answer
        # said it has nothing left for it. A real stealer looks again every half second; the answer is
        # the same until a backoff ends or gossip brings news of work (directory.py), so wait for those.
        now = w.clock.now
        ends = [t for v in victims if (t := self.thief.backoff_end(v.peer)) > now]
        if ends:
            self._look_soon(min(ends))
        w.directory.wait(self.index, partial(self._look_soon_from, self.epoch))

    def _look_soon_from(self, epoch: int) -> None:
        if epoch == self.epoch:
            self._look_soon(self.world.clock.now)

    def _victims(self) -> tuple[PeerView, ...]:
        """The peers offering the most work (``steal.views_of`` over what gossip said; ``directory.py``).

        Made again only when gossip, the topology or this node's reputation record changed.
        """
        w = self.world
        net, me = w.net, self.index
        key = (w.directory.version, net.version, self.reputation_version)
        if key == self._views_key:
            return self._views
        side = net.side[me]
        offers = w.directory.offers_to(me, side, lambda p: net.up[p] and net.side[p] == side, net.version)
        heard_at = w.directory.heard_at
        for peer, _ in offers:
            answered = self.answered_at.get(peer)
            if answered is not None and heard_at[peer] > answered:  # a presence newer than its last answer
                del self.answered_at[peer]
                self._carry_all(self.thief.handle(PresenceHeard(w.ids[peer])))
        if len(self.reputation):
            ids = [w.ids[p] for p, _ in offers]
            rank = {w.index_of[p]: k for k, p in enumerate(self.reputation.rank(ids))}
            poor = {p: self._poor(w.ids[p]) for p, _ in offers}
        else:  # a clean record of everyone: ranked by peer ID alone, which the order of numbers keeps
            rank, poor = w.id_rank, {}
        self._views_key = key
        self._views = tuple(
            PeerView(w.ids[p], surplus, 2000.0 * net.base_latency(me, p), rank[p], ENGINE, poor.get(p, False))
            for p, surplus in offers
        )
        return self._views

    def _poor(self, peer: PeerId) -> bool:
        return self.reputation.barred_from_quorum(peer) or self.reputation.score(peer) < POOR_SCORE

    def _steal(self, s: StealFrom) -> None:
        w = self.world
        victim = w.index_of[s.victim]
        self.stealing = True
        w.net.call(self.index, victim, "steal", SimPeer.on_steal_ask, (self.index, s.n, s.request_id, s.queued),
                   partial(self._stolen, victim), partial(self._steal_failed, victim))  # fmt: skip

    def _stolen(self, victim: int, answer: object) -> None:
        assert isinstance(answer, StealAnswer)
        w = self.world
        now = w.clock.now
        self.stealing = False
        granted = sum(len(g.subtasks) for g in answer.grants)
        self._carry_all(self.thief.handle(StealAnswered(w.ids[victim], answer.surplus, bool(answer.refused), granted, now)))
        self.answered_at[victim] = now
        for g in answer.grants:
            owner = w.ids[w.job_owner[g.job_id]]
            work = Granted(w.ids[victim], owner, g.job_id, g.job_id, answer.lease, g.subtasks, now)
            self._carry_all(self.thief.handle(work))
        self._renew_soon()
        self._fill()
        self._look_soon(now)
        self._after()

    def _steal_failed(self, victim: int) -> None:
        self.stealing = False
        self._carry_all(self.thief.handle(StealFailed(self.world.ids[victim], self.world.clock.now)))
        self._look_soon(self.world.clock.now)

    # --- serving other nodes (node/job_service.py) ------------------------------------------

    def on_steal_ask(self, call: Call, thief: int, n: int, request_id: int, queued: int) -> None:
        """A thief asks for work: from the jobs this node owns, else from what it stole itself."""
        w = self.world
        now = w.clock.now
        allowed = self._grant_policy(thief, n)
        if allowed <= 0:
            call.answer(StealAnswer((), 0.0, "peers with a better record are waiting for work", 0))
            return
        grants, lease, wanted = [], 0.0, min(n, allowed)
        for job in list(self.jobs.values()):
            if wanted <= 0:
                break
            if job.machine.finished or job.machine.surplus() == 0:
                continue
            carried = job.drive(StealRequest(w.ids[thief], wanted, request_id, now))
            if carried is None:
                return  # died in the commit: no answer
            for g in carried.grants:
                if g.replicas:
                    subtasks = tuple(Subtask(job_id=job.job_id, index=r.index, replica=r.replica, input_sha256=_NO_INPUT,
                                             input_size=0, input=b"", proof=()) for r in g.replicas)  # fmt: skip
                    grants.append(WorkGrant(job.job_id, subtasks))
                    lease = max(lease, g.expires - now)
                    wanted -= len(g.replicas)
        live = [j for j in self.jobs.values() if not j.machine.finished]
        soon = grants or any(j.machine.held_back(w.ids[thief]) for j in live)  # it asks again soon (thief.py)
        surplus = sum(j.machine.surplus() for j in live) if soon else 0
        reply = StealAnswer(tuple(grants), lease, "", surplus)
        if grants or not self._resteal(call, thief, n, queued, reply):
            self._answer(call, reply)
        self._after()

    def _answer(self, call: Call, reply: StealAnswer) -> None:
        if reply.surplus == 0 and self.presence is not None:
            self.presence.nothing_left()  # the thief waits for news of work (MeshJobService.steal)
        call.answer(reply)

    def _grant_policy(self, thief: int, requested: int) -> int:
        """How many replicas ``thief`` may have (``MeshNode._grant_policy``)."""
        w = self.world
        own = sum(j.machine.surplus() for j in self.jobs.values() if not j.machine.finished)
        alive = self.table.alive_count() if self.table is not None else 0
        poor = self._poor(w.ids[thief])
        me = self.index
        better_idle = poor and w.directory.any_idle(
            lambda p: p not in (me, thief) and w.net.reachable(me, p) and not self._poor(w.ids[p])
        )
        return grant_for(requested, own, 1 + alive, poor=poor, better_idle=better_idle)

    def _resteal(self, call: Call, thief: int, n: int, queued: int, fallback: StealAnswer) -> bool:
        """Serve a starving thief from the cold end of the stolen stock, through the owner (``Workers.resteal``)."""
        w = self.world
        for i in self._carry(self.thief.handle(RestealAsked(w.ids[thief], n, queued))):
            match i:
                case AskTransfer():
                    call.deferred = True
                    self.deferred.append(call)
                    w.net.call(self.index, w.index_of[i.owner], "transfer", SimPeer.on_transfer_ask,
                               (self.index, i.job_id, thief, i.replicas),
                               partial(self._transfer_answered, call, i, fallback),
                               partial(self._transfer_failed, call, i, fallback))  # fmt: skip
                    return True
                case _:
                    raise TypeError(f"RestealAsked answered {i!r}")
        return False

    def _transfer_answered(self, call: Call, ask: AskTransfer, fallback: StealAnswer, answer: object) -> None:
        assert isinstance(answer, tuple)
        moved, lease_ms = answer
        self._handed(call, ask, fallback, moved, lease_ms)

    def _transfer_failed(self, call: Call, ask: AskTransfer, fallback: StealAnswer) -> None:
        self._handed(call, ask, fallback, (), 0)

    def _handed(
        self, call: Call, ask: AskTransfer, fallback: StealAnswer, moved: tuple[ReplicaRef, ...], lease_ms: int
    ) -> None:
        self.deferred.remove(call)
        reply = fallback
        for i in self._carry(self.thief.handle(TransferAnswered(ask.job_id, ask.to, ask.replicas, moved, lease_ms))):
            match i:
                case HandOver():
                    reply = StealAnswer((WorkGrant(i.job_id, i.subtasks),), i.lease_ms / 1000, "", self.thief.surplus())
                case _:
                    raise TypeError(f"TransferAnswered answered {i!r}")
        self._answer(call, reply)
        self._fill()  # what the owner did not move is back in the stock (a real idle slot finds it within half a second)
        self._after()

    def on_push(self, call: Call, sender: int, claims: tuple[ResultClaim, ...]) -> None:
        """Results pushed by an executor: each job's driver answers its claims (``MeshJobService.push``)."""
        w = self.world
        sender_id = w.ids[sender]
        acks: list[Ack] = []
        by_job: dict[bytes, list[ResultClaim]] = {}
        for c in claims:
            if c.executor != sender_id:
                acks.append((c.job_id, c.index, c.replica, "rejected"))
            elif c.job_id not in self.jobs:
                acks.append((c.job_id, c.index, c.replica, "late"))  # no such running job here
            else:
                by_job.setdefault(c.job_id, []).append(c)
        freed = False
        for job_id, cs in by_job.items():
            barred = self.barred()
            held_back = self.jobs[job_id].machine.held_back(self.id)
            carried = self.jobs[job_id].drive(*(ClaimReceived(c, w.clock.now, barred) for c in cs))
            if carried is None:
                return  # died in the commit: no answer, the executor pushes again later
            freed |= held_back and not self.jobs[job_id].machine.held_back(self.id)
            said = {a.replica: a.status for a in carried.acks if a.executor == sender_id}
            acks += [(c.job_id, c.index, c.replica, said.get(ReplicaRef(c.index, c.replica), "accepted")) for c in cs]
        call.answer(tuple(acks))
        if freed:
            self._fill()  # our own slots waited for these verdicts to take new subtasks (``MeshJobService.push``)
        self._after()

    def on_renew(self, holder: int, job_id: bytes, refs: tuple[ReplicaRef, ...]) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.drive(RenewEvent(self.world.ids[holder], refs, self.world.clock.now)) is not None:
            self._after()

    def on_tell(self, holder: int, job_id: bytes, refs: tuple[ReplicaRef, ...], reason: str) -> None:
        """A holder refused replicas, or handed them back unrun."""
        job = self.jobs.get(job_id)
        if job is not None and job.drive(ReleaseReplicas(self.world.ids[holder], refs, self.world.clock.now)) is not None:
            self._wake()
            self._after()

    def on_transfer_ask(self, call: Call, holder: int, job_id: bytes, to: int, refs: tuple[ReplicaRef, ...]) -> None:
        w = self.world
        job = self.jobs.get(job_id)
        if job is None or job.machine.finished:
            call.answer(((), 0))
            return
        now = w.clock.now
        carried = job.drive(TransferReplicas(w.ids[holder], w.ids[to], refs, now))
        if carried is None:
            return
        moved = next((t for t in carried.transferred if t.replicas), None)
        call.answer(((), 0) if moved is None else (moved.replicas, round((moved.expires - now) * 1000)))
        if moved is not None and to == self.index:
            self._fill()  # we robbed a thief of our own work: it is queued for our slots
        self._after()

    def on_revoke(self, owner: int, job_id: bytes, refs: tuple[ReplicaRef, ...], reason: str) -> None:
        self._carry_all(self.thief.handle(Revoked(self.world.ids[owner], job_id, refs, reason)))
        self._after()

