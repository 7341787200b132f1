"""The thief's state machine: the work a node takes from other owners, from the steal to the owner's answer.

Its counterpart on the owner's side is ``owner.py``. The node feeds it events
with ``handle`` and carries out the instructions it returns (``node/stealing.py``).

Theory of operation:

*Replicas.* Every replica the node took from another owner is in one state:

    state     leaves by                                                 to
    --------  --------------------------------------------------------  --------
    queued    a slot takes it in a chunk (``TakeChunk``)                running
              handed to a starving thief (or back to an idle owner),    (gone)
              through the owner
              refused here                                              (gone)
              revoked by its owner                                      (gone)
    running   its chunk ends (``ChunkDone``): its result is pushed      reported
              its chunk ends after it was revoked: nothing is pushed,   (gone)
              and the result is dropped
              its chunk fails before it ran (``ChunkFailed``)           (gone)
    reported  the owner answers the push (``Acknowledged``)             (gone)
              revoked by its owner                                      (gone)
    any       its owner leaves the mesh                                 (gone)

*Held* replicas - queued, running or reported - have leases at their owner,
renewed with one message per job every third of the lease (``Tick``). A
replica that is gone is never renewed again, so its lease lapses at the owner
unless the owner already knows (a refusal, a hand-back, a transfer, its own
revocation).

*Revocations.* The owner revokes a replica when its subtask is decided, the job
is cancelled, or the lease was lost. A revoked replica is never started after
the revocation is heard, and its result is never pushed; one already running
stops mattering at the end of its chunk (a chunk is about ``CHUNK_SECONDS`` of
work, and stops after ``CHUNK_BUDGET``; what it did not reach is handed back).

*Stock.* The node keeps about ``STOCK_SECONDS`` of stolen work per slot (at
least ``BATCH_FACTOR``), measured by the time its chunks take, and asks for more
when the stock is half gone, so the next steal's round trip hides behind the
work already here. It steals only when its own jobs have nothing it may run
and its journal takes writes (``LookForWork``). It picks the best victim
(``steal.py``): not one it backs off from (a failed exchange: 1 s; a refusal,
or work it refused: ``REFUSAL_BACKOFF``, or ``PASSING_BACKOFF`` when what stood
in the way may pass, a module no peer could deliver in time; an owner that
granted nothing but has work left, holding this node back until the others
catch up: ``HELD_BACK_WAIT``, doubling), and trusting what a victim's last
answer said it has left until the victim's next presence (or for
``ANSWER_TRUSTED`` seconds: a presence can be lost).

*Stealing from thieves.* Stolen replicas beyond one per slot are surplus too:
a thief with nothing queued is served from the cold end of the newest job's
stock, through the owner (``TransferAsk``), so nothing is ever in two hands;
an idle owner gets back, unrun, those it may run itself.

Time is an argument (seconds on a monotonic clock, and unix milliseconds for
request ids); nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .job import ReplicaRef
from .manifest import Subtask
from .peer_id import PeerId
from .presence import next_seq
from .steal import BATCH_FACTOR, PeerView, grant_limit, plan_steal

__all__ = [
    "ANSWER_TRUSTED", "CHUNK_BUDGET", "CHUNK_SECONDS", "MAX_CHUNK", "MAX_STEAL", "PASSING_BACKOFF", "REFUSAL_BACKOFF", "STOCK_SECONDS",
    "AskTransfer", "Acknowledged", "ChunkDone", "Ready", "ChunkFailed", "DropResults", "Event", "Granted", "HandOver", "Instruction",
    "LookForWork", "OwnerLeft", "PresenceHeard", "PushResults", "Refused", "RenewLeases", "RestealAsked",
    "Revoked", "RunChunk", "StealAnswered", "StealFailed", "StealFrom", "TakeChunk", "TellOwner", "Thief",
    "Tick", "TransferAnswered",
]  # fmt: skip

STOCK_SECONDS: Final = 0.1  # stolen work kept per slot, in measured run time
# Work per chunk (a slot's trip into a worker thread and its sandbox process, one journal commit, a
# share of a push): short enough to keep the slots balanced at the end of a job, long enough to amortize
# what each chunk costs both nodes (about 2-3 ms of their CPU). Also the size of a local ``exec`` chunk.
CHUNK_SECONDS: Final = 0.1
# A chunk's runs stop once they took this long, and the subtasks not reached go back (``ChunkDone.unrun``,
# and ``ReleaseReplicas`` for an owner's own chunk): subtasks of one job can differ in cost a hundredfold,
# and a chunk sized from cheap ones that meets dear ones would run on alone at the job's end. On a 2-node
# mandelbrot job of 256 tiles (chunks of 50 ms then, no budget), one chunk of 38 tiles took 1.49 s of a
# 1.9 s job, and 2 jobs in 20 ended with one node alone for their last 1.2 s (2.46 s against 2.0 s). With
# 0.1 s chunks and this budget: no such tail in 20 jobs, median 2.06 s against 2.01 s without.
CHUNK_BUDGET: Final = 2 * CHUNK_SECONDS
MAX_CHUNK: Final = 256
MAX_STEAL: Final = 256  # replicas per steal request (the protocol's batch limit)
REFUSAL_BACKOFF: Final = 60.0  # seconds a victim is left alone after a refusal either way
FAILURE_BACKOFF: Final = 1.0  # seconds a victim is left alone after a failed or refused exchange
# seconds an owner is left alone after this node gave its work back for a reason that may pass (its module
# could not be fetched in time): at a job's start its owner serves dozens of thieves at once, and 60 s
# kept thieves whose first fetch timed out away from it for most of the job (50 nodes on 2 cores)
PASSING_BACKOFF: Final = 10.0
# seconds a victim's answer about what it has left is believed over its last presence. The news that
# work came back reaches a thief told "nothing left" by gossip; a message gossip lost, or a peer it no
# longer reaches (core/peers.GOSSIP_SILENT_INTERVALS), must not keep that thief away for good: it asks again.
ANSWER_TRUSTED: Final = 30.0
# seconds a victim is left alone after it granted nothing but said it has work left: it holds this node back
# while others catch up (owner.MAX_AHEAD), which passes when they report. Doubled for every such answer in
# a row, up to HELD_BACK_MAX: what holds it back can also last (a job waiting for a node that is not there).
HELD_BACK_WAIT: Final = 0.05
HELD_BACK_MAX: Final = 2.0


# --- events (in) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Granted:
    """``victim`` granted these subtasks of ``owner``'s job; the node checked the manifest and trusts
    the owner. ``envelope`` is the owner's signed manifest, kept for the runs. With ``ready`` false
    the module is still being fetched: the replicas are held (and renewed) but not run before ``Ready``."""

    victim: PeerId
    owner: PeerId
    job_id: bytes
    envelope: bytes
    lease_s: float
    subtasks: tuple[Subtask, ...]
    now: float
    ready: bool = True


@dataclass(frozen=True, slots=True)
class Ready:
    """The module of this job is here: its replicas may run."""

    job_id: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """This node will not run these replicas (why: ``reason``); the owner is told, and left alone a while:
    ``REFUSAL_BACKOFF``, or ``PASSING_BACKOFF`` if the reason may pass (``passing``)."""

    owner: PeerId
    job_id: bytes
    replicas: tuple[ReplicaRef, ...]
    reason: str
    now: float
    passing: bool = False


@dataclass(frozen=True, slots=True)
class Revoked:
    """The owner revoked these replicas (its message came from the owner itself)."""

    owner: PeerId
    job_id: bytes
    replicas: tuple[ReplicaRef, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class TakeChunk:
    """A slot is free: give it a chunk to run, if there is one."""

    now: float


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """A chunk ran (its results are in the outbox); it took ``seconds``. ``unrun``: its subtasks the
    chunk's time budget (``CHUNK_BUDGET``) did not reach, which are handed back to their owner: dearer than
    this node's pace said, they are better shared out again, by the owner, among every idle slot."""

    job_id: bytes
    replicas: tuple[ReplicaRef, ...]
    seconds: float
    now: float
    unrun: tuple[Subtask, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    """A chunk could not run (an input could not be fetched, say): its leases are left to lapse."""

    job_id: bytes
    replicas: tuple[ReplicaRef, ...]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The owner answered the push of these replicas' results (any answer ends the push)."""

    job_id: bytes
    replicas: tuple[ReplicaRef, ...]


@dataclass(frozen=True, slots=True)
class OwnerLeft:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class LookForWork:
    """Should the node steal now? ``victims`` are the alive peers (``steal.views_of``)."""

    victims: tuple[PeerView, ...]
    own_work: bool  # the node's own jobs have replicas it may run
    accepting: bool  # the journal takes writes (no results without an outbox)
    engine: str
    now: float
    unix_ms: int


@dataclass(frozen=True, slots=True)
class StealAnswered:
    """``victim`` answered a steal: what it has left, and whether it refused (a poor record, say)."""

    victim: PeerId
    surplus: int
    refused: bool
    granted: int
    now: float


@dataclass(frozen=True, slots=True)
class StealFailed:
    """A steal got no usable answer: the victim did not answer, or (``malformed``) sent a grant that does not open."""

    victim: PeerId
    now: float
    malformed: bool = False


@dataclass(frozen=True, slots=True)
class PresenceHeard:
    """A presence from ``peer`` that advertises surplus: newer than what its last answer said."""

    peer: PeerId


@dataclass(frozen=True, slots=True)
class RestealAsked:
    """A starving ``thief`` (``queued`` replicas waiting) asks this node for up to ``n`` of what it stole."""

    thief: PeerId
    n: int
    queued: int


@dataclass(frozen=True, slots=True)
class TransferAnswered:
    """The owner moved ``moved`` (of ``asked``) to ``to``, with leases of ``lease_ms``."""

    job_id: bytes
    to: PeerId
    asked: tuple[ReplicaRef, ...]
    moved: tuple[ReplicaRef, ...]
    lease_ms: int


Event = (
    Granted | Ready | Refused | Revoked | TakeChunk | ChunkDone | ChunkFailed | Acknowledged | OwnerLeft | Tick | LookForWork
    | StealAnswered | StealFailed | PresenceHeard | RestealAsked | TransferAnswered
)  # fmt: skip


# --- instructions (out) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StealFrom:
    victim: PeerId
    n: int
    request_id: int
    queued: int  # how many replicas this node has waiting (a victim serves only starving thieves from stolen work)


@dataclass(frozen=True, slots=True)
class RunChunk:
    job_id: bytes
    envelope: bytes
    subtasks: tuple[Subtask, ...]


@dataclass(frozen=True, slots=True)
class PushResults:
    owner: PeerId
    job_id: bytes
    replicas: tuple[ReplicaRef, ...]


@dataclass(frozen=True, slots=True)
class DropResults:
    """Results of revoked replicas: forget them (outbox included), never push them."""

    job_id: bytes
    replicas: tuple[ReplicaRef, ...]


@dataclass(frozen=True, slots=True)
class RenewLeases:
    owner: PeerId
    job_id: bytes
    replicas: tuple[ReplicaRef, ...]


@dataclass(frozen=True, slots=True)
class TellOwner:
    """Tell the owner these replicas will not run here: why (a refusal), or "" (handed back unrun)."""

    owner: PeerId
    job_id: bytes
    replicas: tuple[ReplicaRef, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class AskTransfer:
    """Ask the owner to move these queued replicas to the starving ``to``."""

    owner: PeerId
    job_id: bytes
    to: PeerId
    replicas: tuple[ReplicaRef, ...]


@dataclass(frozen=True, slots=True)
class HandOver:
    """Answer the starving thief ``to`` with the subtasks the owner moved to it."""

    to: PeerId
    job_id: bytes
    envelope: bytes
    subtasks: tuple[Subtask, ...]
    lease_ms: int


Instruction = StealFrom | RunChunk | PushResults | DropResults | RenewLeases | TellOwner | AskTransfer | HandOver


@dataclass(slots=True)
class _Job:
    owner: PeerId
    envelope: bytes
    lease_s: float
    renewed_at: float
    ready: bool = True  # its module is here
    queued: deque[Subtask] = field(default_factory=deque)  # not started, oldest first
    running: set[ReplicaRef] = field(default_factory=set)
    reported: set[ReplicaRef] = field(default_factory=set)  # pushed (or waiting to be), not yet answered
    revoked: set[ReplicaRef] = field(default_factory=set)  # revoked while running: their results are dropped

    def held(self) -> list[ReplicaRef]:
        """Queued, running (unless revoked) or reported: what the owner's leases cover."""
        return sorted({_ref(s) for s in self.queued} | (self.running - self.revoked) | self.reported)

    def empty(self) -> bool:
        return not (self.queued or self.running or self.reported)


def _ref(s: Subtask) -> ReplicaRef:
    return ReplicaRef(s.index, s.replica)


class Thief:
    """The thief's state machine for one node. Feed it events with ``handle``; carry out what it returns.

    Args:
        me: this node.
        slots: how many chunks the node runs at once.
    """

    def __init__(self, me: PeerId, slots: int) -> None:
        if slots < 1:
            raise ValueError("a node has at least one slot")
        self.me, self.slots = me, slots
        self._jobs: dict[bytes, _Job] = {}  # by job ID, oldest first
        self._backoff: dict[PeerId, float] = {}  # victims left alone until then
        self._held_back: dict[PeerId, int] = {}  # victims that held us back, and how many answers in a row
        # victim -> our last request to it, while no answer to it came: the next steal from that victim asks
        # again under the same id, and an owner answers it with what it granted then (a lost answer would
        # otherwise leave those replicas leased to us until they lapse, and the lapse counts against us)
        self._unanswered: dict[PeerId, int] = {}
        self._fresh_surplus: dict[PeerId, tuple[int, float]] = {}  # from steal answers (and when), newer than presence
        self._request_id = 0
        self._seconds_per_subtask: float | None = None  # of stolen work, smoothed over chunks
        self._pending: dict[bytes, tuple[PeerId, tuple[Subtask, ...]]] = {}  # transfers asked, by job

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event and return what the node must do about it.

        Raises:
            TypeError: ``event`` is not one of the thief's events.
        """
        match event:
            case Granted():
                return self._granted(event)
            case Ready():
                job = self._jobs.get(event.job_id)
                if job is not None:
                    job.ready = True
                return []
            case Refused():
                return self._refused(event)
            case Revoked():
                return self._revoked(event)
            case TakeChunk():
                return self._take_chunk()
            case ChunkDone():
                return self._chunk_done(event)
            case ChunkFailed():
                job = self._jobs.get(event.job_id)
                if job is not None:
                    for ref in event.replicas:
                        self._forget(job, ref)
                    self._drop_if_empty(event.job_id)
                return []
            case Acknowledged():
                job = self._jobs.get(event.job_id)
                if job is not None:
                    for ref in event.replicas:
                        job.reported.discard(ref)
                    self._drop_if_empty(event.job_id)
                return []
            case OwnerLeft():
                for job_id, job in list(self._jobs.items()):
                    if job.owner == event.peer:
                        del self._jobs[job_id]
                        self._pending.pop(job_id, None)
                self._fresh_surplus.pop(event.peer, None)
                self._unanswered.pop(event.peer, None)
                self._held_back.pop(event.peer, None)
                return []
            case Tick():
                return self._renewals(event.now)
            case LookForWork():
                return self._look_for_work(event)
            case StealAnswered():
                self._unanswered.pop(event.victim, None)
                self._fresh_surplus[event.victim] = (event.surplus, event.now)
                if event.refused:
                    self._backoff[event.victim] = event.now + FAILURE_BACKOFF
                elif event.granted == 0 and event.surplus > 0:
                    times = self._held_back.get(event.victim, 0)
                    self._held_back[event.victim] = times + 1
                    self._backoff[event.victim] = event.now + min(HELD_BACK_MAX, HELD_BACK_WAIT * 2**times)
                if event.granted or event.refused or not event.surplus:
                    self._held_back.pop(event.victim, None)
                return []
            case StealFailed():
                if event.malformed:
                    self._unanswered.pop(event.victim, None)  # it answered, with nothing we could use
                self._backoff[event.victim] = event.now + (REFUSAL_BACKOFF if event.malformed else FAILURE_BACKOFF)
                return []
            case PresenceHeard():
                self._fresh_surplus.pop(event.peer, None)
                return []
            case RestealAsked():
                return self._resteal(event)
            case TransferAnswered():
                return self._transferred(event)
        raise TypeError(f"a thief does not handle {type(event).__name__}")

    # --- queries -----------------------------------------------------------------------

    def queued(self) -> int:
        return sum(len(j.queued) for j in self._jobs.values())

    def surplus(self) -> int:
        """Stolen replicas this node could give a starving peer: all it has queued beyond one per slot."""
        return max(0, self.queued() - self.slots)

    def backoff_end(self, peer: PeerId) -> float:
        """When ``peer`` may be asked for work again (0.0 if it may be now)."""
        return self._backoff.get(peer, 0.0)

    def next_backoff_end(self, now: float) -> float | None:
        """The first moment after ``now`` at which a victim left alone may be asked again; None if none is."""
        return min((t for t in self._backoff.values() if t > now), default=None)

    def stock(self) -> int:
        """How many stolen replicas to keep queued: ``STOCK_SECONDS`` of work per slot."""
        per_slot = BATCH_FACTOR
        if self._seconds_per_subtask:
            per_slot = max(per_slot, math.ceil(STOCK_SECONDS / self._seconds_per_subtask))
        return min(MAX_STEAL, per_slot * self.slots)

    def held(self) -> dict[bytes, list[ReplicaRef]]:
        """Every replica held, by job: what the owner's leases cover."""
        return {job_id: job.held() for job_id, job in self._jobs.items()}

    def next_request_id(self, unix_ms: int) -> int:
        """A steal request ID, growing with every request and across restarts (for a steal the node asks for itself)."""
        self._request_id = next_seq(self._request_id, unix_ms)
        return self._request_id

    def owner_of(self, job_id: bytes) -> PeerId | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.owner

    def next_renewal(self) -> float | None:
        """When the next lease renewal is due, or None while nothing is held."""
        due = [job.renewed_at + job.lease_s / 3 for job in self._jobs.values() if not job.empty()]
        return min(due, default=None)

    # --- transitions -------------------------------------------------------------------

    def _granted(self, e: Granted) -> list[Instruction]:
        job = self._jobs.get(e.job_id)
        if job is None:
            job = self._jobs[e.job_id] = _Job(e.owner, e.envelope, e.lease_s, e.now, ready=e.ready)
        elif job.owner != e.owner:
            return []  # the same job ID from another owner: not the job we hold
        # the owner never grants two replicas of one subtask to one node; one that does is not obeyed
        indices = {r.index for r in job.held()} | {s.index for s in self._pending.get(e.job_id, (e.owner, ()))[1]}
        for s in e.subtasks:
            if s.job_id == e.job_id and s.index not in indices:
                indices.add(s.index)
                job.queued.append(s)
        self._drop_if_empty(e.job_id)
        return []

    def _refused(self, e: Refused) -> list[Instruction]:
        self._backoff[e.owner] = e.now + (PASSING_BACKOFF if e.passing else REFUSAL_BACKOFF)
        job = self._jobs.get(e.job_id)
        if job is not None and job.owner == e.owner:
            for ref in e.replicas:
                self._forget(job, ref)
            self._drop_if_empty(e.job_id)
        return [TellOwner(e.owner, e.job_id, e.replicas, e.reason)]

    def _revoked(self, e: Revoked) -> list[Instruction]:
        job = self._jobs.get(e.job_id)
        if job is None or job.owner != e.owner:
            return []
        revoked = set(e.replicas)
        dropped = []
        job.queued = deque(s for s in job.queued if _ref(s) not in revoked)
        if e.job_id in self._pending:  # asked to move to a starving thief: it must not come back to the queue
            to, taken = self._pending[e.job_id]
            self._pending[e.job_id] = (to, tuple(s for s in taken if _ref(s) not in revoked))
        for ref in revoked:
            if ref in job.running:
                job.revoked.add(ref)  # its chunk is under way: its result must not be pushed
            elif ref in job.reported:
                job.reported.discard(ref)
                dropped.append(ref)
        self._drop_if_empty(e.job_id)
        return [DropResults(e.job_id, tuple(sorted(dropped)))] if dropped else []

    def _take_chunk(self) -> list[Instruction]:
        for job_id, job in self._jobs.items():
            if not job.queued or not job.ready:
                continue
            n = min(len(job.queued), self._chunk_size(len(job.queued)))
            chunk = tuple(job.queued.popleft() for _ in range(n))
            job.running.update(_ref(s) for s in chunk)
            return [RunChunk(job_id, job.envelope, chunk)]
        return []

    def _chunk_size(self, left: int) -> int:
        """About ``CHUNK_SECONDS`` of work, and no more than a share of what is ``left`` among the slots:
        subtasks of one job can differ in cost a hundredfold, and the last chunks must be small."""
        s = self._seconds_per_subtask
        by_time = 1 if not s else int(CHUNK_SECONDS / s)
        return max(1, min(MAX_CHUNK, by_time, left // (2 * self.slots)))

    def _chunk_done(self, e: ChunkDone) -> list[Instruction]:
        if e.replicas:
            latest = e.seconds / len(e.replicas)
            last = self._seconds_per_subtask or latest
            self._seconds_per_subtask = 0.5 * last + 0.5 * latest  # one cheap chunk must not swell the stock
        job = self._jobs.get(e.job_id)
        if job is None:  # its owner left: nobody would take the results
            return [DropResults(e.job_id, e.replicas)]
        back = []
        for s in e.unrun:  # never started: handed back (revoked ones are just forgotten)
            ref = _ref(s)
            if s.job_id == e.job_id and ref in job.running:
                job.running.discard(ref)
                if ref in job.revoked:
                    job.revoked.discard(ref)
                else:
                    back.append(ref)
        push, drop = [], []
        for ref in e.replicas:
            if ref not in job.running:
                continue
            job.running.discard(ref)
            if ref in job.revoked:
                job.revoked.discard(ref)
                drop.append(ref)
            else:
                job.reported.add(ref)
                push.append(ref)
        out: list[Instruction] = []
        if push:
            out.append(PushResults(job.owner, e.job_id, tuple(push)))
        if drop:
            out.append(DropResults(e.job_id, tuple(drop)))
        if back:
            out.append(TellOwner(job.owner, e.job_id, tuple(back), ""))
        self._drop_if_empty(e.job_id)
        return out

    def _renewals(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        for job_id, job in self._jobs.items():
            if not job.empty() and now >= job.renewed_at + job.lease_s / 3:
                job.renewed_at = now
                out.append(RenewLeases(job.owner, job_id, tuple(job.held())))
        return out

    def _look_for_work(self, e: LookForWork) -> list[Instruction]:
        stock, queued = self.stock(), self.queued()
        if e.own_work or not e.accepting or queued > stock // 2:
            return []
        candidates = []
        for v in e.victims:
            if v.peer == self.me or self._backoff.get(v.peer, 0.0) > e.now:
                continue
            answered, at = self._fresh_surplus.get(v.peer, (v.surplus, e.now))
            surplus = answered if e.now - at < ANSWER_TRUSTED else v.surplus
            if surplus > 0:
                candidates.append(PeerView(v.peer, surplus, v.rtt_ms, v.rank, v.engine, v.poor))
        plan = plan_steal(candidates, idle_slots=self.slots, queued=queued, engine=e.engine,
                          factor=max(1, stock // self.slots))  # fmt: skip
        if plan is None:
            return []
        request_id = self._unanswered.get(plan.victim) or self.next_request_id(e.unix_ms)
        self._unanswered[plan.victim] = request_id
        return [StealFrom(plan.victim, min(plan.count, MAX_STEAL), request_id, queued)]

    def _resteal(self, e: RestealAsked) -> list[Instruction]:
        n = grant_limit(e.n, self.surplus())
        donor_id = next((jid for jid in reversed(self._jobs) if self._jobs[jid].queued and jid not in self._pending), None)
        if n <= 0 or donor_id is None or e.queued > 0:
            return []
        donor = self._jobs[donor_id]
        taken = tuple(donor.queued.pop() for _ in range(min(n, len(donor.queued))))  # the cold end
        refs = tuple(_ref(s) for s in taken)
        # also when the thief is the owner: it takes back only those it may run (not the other replica of
        # a subtask it ran), and what it leaves stays in our stock. Handing them all back at once, with
        # two nodes and replicas 2, put replicas only we could run in the owner's queue, to be stolen again.
        self._pending[donor_id] = (e.thief, taken)
        return [AskTransfer(donor.owner, donor_id, e.thief, refs)]

    def _transferred(self, e: TransferAnswered) -> list[Instruction]:
        pending = self._pending.pop(e.job_id, None)
        job = self._jobs.get(e.job_id)
        if pending is None or pending[0] != e.to:
            return []
        _, taken = pending
        moved = set(e.moved) & {_ref(s) for s in taken}
        kept = [s for s in taken if _ref(s) not in moved]
        if job is None:  # its owner left meanwhile
            return []
        job.queued.extend(reversed(kept))  # back to the cold end, in their order
        self._drop_if_empty(e.job_id)
        if e.to == job.owner:
            return []  # the owner queued what moved for its own slots: there is nothing to hand over
        handed = tuple(s for s in reversed(taken) if _ref(s) in moved)
        return [HandOver(e.to, e.job_id, job.envelope, handed, e.lease_ms)] if handed else []

    def _forget(self, job: _Job, ref: ReplicaRef) -> None:
        job.queued = deque(s for s in job.queued if _ref(s) != ref)
        job.running.discard(ref)
        job.reported.discard(ref)
        job.revoked.discard(ref)

    def _drop_if_empty(self, job_id: bytes) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.empty() and job_id not in self._pending:
            del self._jobs[job_id]


def refs_of(subtasks: Iterable[Subtask]) -> tuple[ReplicaRef, ...]:
    """The replicas these subtasks are."""
    return tuple(_ref(s) for s in subtasks)
