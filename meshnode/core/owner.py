"""The owner's state machine for one job: replicas, leases, claims and verdicts.

Its events and instructions are in ``job.py``.

Theory of operation:

*A window over the job.* A job may have a million subtasks; the machine holds
state only for the *open* ones - granted at least once and not yet decided -
and a byte per subtask for what was decided. Subtasks are opened in index
order as work is handed out, and at most ``max_open`` are open at once (and
no new one while the candidate outputs held for open ones exceed
``max_pending_bytes``), so memory is bounded by the work in flight, never by
the size of the job. Everything at or past the *cursor* is untouched: its
replicas are implicitly queued.

Each subtask starts with ``max(replicas, quorum)`` replicas (fewer could never
verify). Every replica ``(index, replica)`` of an open subtask is in one state:

    state     leaves by                                               to
    --------  ------------------------------------------------------  --------
    queued    a grant to a thief, or to the owner's own slots          leased
    leased    a claim from a node bound to this replica                reported
              its lease lapses (tick), its holder leaves or releases  queued
    reported  (never)
    any       the subtask's verdict: the subtask closes, queued        (gone)
              replicas are dropped, leased ones revoked

*Close together in time.* Every request - a thief's or the owner's own slots'
- is served from the front: first the queued replicas of open subtasks, lowest
index first, then newly opened subtasks. So the replicas of one subtask are
handed to different nodes within moments of each other, verdicts arrive from
the first seconds of a job, and the decided count grows steadily instead of in
one burst when the two ends of a deque meet. And no node runs far ahead of the
others: a node bound to ``MAX_AHEAD`` open subtasks is given no new ones until
the others catch up. (Measured without it, two
nodes in one busy process: the owner's own slot, with no round trip to make, ran
its replica of all 20,000 subtasks while the thief ran 4,000, and half of the
job's verdicts came in its last fifth.)

*Binding*: the first grant of any replica of a subtask to a node binds that node
to that replica. It may be granted the same replica again (its lease lapsed
while it kept working, say) but not another one while its binding may still
bear fruit. A binding goes *stale* when someone else has the replica (took it
over, or reported it) and the node reported nothing for the subtask; a node
whose binding is stale may be bound to another replica, and is then heard on
that one only. A claim is accepted only from a node bound to the replica it
names - the holder, or a past holder whose lease lapsed while it kept working -
and once per executor: a replayed claim is acknowledged and ignored. So no node
counts twice towards a verdict, and replicas added late can always find a node.

After each accepted claim the subtask's ``Tally`` judges it (``verify.py``). A
final verdict ends the subtask; a pending one asks for ``more`` executors, and
replicas are added (never beyond ``max_replicas``) to cover what is not already
queued or running. *Attempts*: a node that took a replica and never answered
(its lease lapsed, or it left) counts once, until it does answer; at
``max_attempts`` distinct nodes the subtask fails with the last error. This is
what stops a subtask that crashes whoever runs it. A failure code in a claim is
not an attempt but a result: the verifier weighs it like any other, so one
byzantine "trap" cannot fail a subtask honest peers can run.

*Holding*: a holder renews its leases as long as it works, but no holder keeps one
replica longer than ``max_hold`` seconds from its grant (the node sets it from the
job's time limit: longer than an honest node can take to start and finish a run).
Past it the replica goes back to the queue as if its lease lapsed (``HELD_TOO_LONG``,
an attempt), another node may take it, and the holder cannot revive the lease: it may
still report. Without the bound, a peer that takes work and renews it without
running it held those subtasks for good (found by the simulator, docs/simulator.md).

*Stale requests*: stealing is transactional - the grant is the owner's
confirmation, and a thief runs nothing before it has one. Each steal request
carries an id the thief chose, growing per thief, and the grant echoes it. A
repeat of the thief's last id is a retransmission (a thief asks again under the
id of a request whose answer it never heard): it gets what it still holds of
that grant, with fresh leases, and nothing more; if it holds nothing of it any
more, the repeat is served as a new request. An older id is stale and
dropped, as distributed's stealing drops a confirmation whose stimulus id is not
current; a thief that receives a grant for a request it gave up on hands the
replicas back with ``ReleaseReplicas`` (no attempt is counted).

*Stealing from thieves*: a thief robbed in turn hands replicas it has not
started to the new thief only through the owner (``TransferReplicas``): the
owner moves the lease and the binding - the old holder never ran the replica,
so it is unbound from it, and the new one must not be bound to another replica
of that subtask - and answers which replicas moved. An idle owner robbing a
thief of its own work is the new thief: what moves to it is queued for its own
slots, and it takes back only what it may run (not the other replica of a
subtask it ran). Until the new holder renews a moved replica, a lapse of its
lease is the old holder's attempt, and nobody's failure: either thief could be
framing the other. Nothing is ever in two hands, and a claim is still accepted
only from the node bound to its replica.

*Adaptive replication* (``adaptive.py``; a job given a ``TrustBook``): a
subtask opens with one replica. Granted to an executor the book does not trust,
it gets a second replica at once and waits for a quorum. Granted to a trusted
one, it stays single: when that executor's result is in, the owner draws, and
either accepts it alone (``verified_by`` "single") or adds a replica as a spot
check ("single+spotcheck" once the check agrees). A result is accepted alone only
if its executor is still trusted when it arrives and its status is "ok";
anything else is judged by a quorum. ``Reopen`` undoes verdicts that an executor
since caught lying vouched for alone: the subtasks open again, that executor may
never take them, a quorum of others decides them, and the new verdicts replace
the old (``SubtaskDecided.revised``).

*Cancel*: a ``Cancel`` event closes every open subtask (queued replicas dropped, leases
revoked); the undecided subtasks stay undecided and the job counts as finished.

*Crash*: the journal, not the machine, is the record of what was decided. A
``snapshot`` holds the window only (the cursor, the open subtasks' claims,
bindings and lost attempts): its size follows the work in flight. ``restore``
takes a snapshot *and every verdict the journal holds*, however old the
snapshot and however many restarts came between: verdicts close their
subtasks, leased replicas go back to the queue (their holders stay bound, so
their claims are still accepted and their renewals revive the lease), and a
subtask opened before the snapshot that is neither open in it nor decided in
the journal (its verdict was reached but never journalled) is opened again.
Nothing journalled is decided twice, and nothing is lost.

Time is an argument (seconds on a monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..errors import WireError
from .job import (
    HELD_TOO_LONG, LEASE_LAPSED, PEER_GONE, Ack, Cancel, ClaimReceived, Event, Failed, Grant, Instruction, JobFinished, Outcome,
    PeerLeft, Progress, ReleaseReplicas, RenewLeases, Renewed, Reopen, Reopened, ReplicaLost, ReplicaRef,
    ReplicasAdded, Revoke, StealRequest, SubtaskDecided, Tick, TransferReplicas, Transferred, VerifiedBy,
)  # fmt: skip
from .adaptive import TrustBook
from .manifest import Replication
from .peer_id import PeerId
from .result import ResultClaim
from .verify import Disputed, Duplicate, Pending, Tally, Verified
from .wire import decode, encode

__all__ = ["DEFAULT_MAX_OPEN", "DEFAULT_MAX_PENDING_BYTES", "MAX_AHEAD", "JobOwner", "status_kind"]

_FORMAT: Final = 3
_READS: Final = (2, 3)  # format 2 is format 3 without adaptive replication
# A replica number no slot has: binding a node to it bars the node from the subtask (``Reopen``).
_BARRED: Final = -1

# Open subtasks at most: far more than every node's stock of stolen work on a large
# mesh, and about 20 MB of state at worst.
DEFAULT_MAX_OPEN: Final = 16384
# Open subtasks one node may be bound to (have run, or be running, a replica of): several
# of its chunks ahead of the slowest node, and no more.
MAX_AHEAD: Final = 1024
# Candidate outputs the node holds for open subtasks (in memory, until a verdict
# picks one) beyond which no new subtask is opened.
DEFAULT_MAX_PENDING_BYTES: Final = 128 << 20

# What ``status`` says of a subtask: a byte per subtask.
UNDECIDED: Final = 0
VERIFIED: Final = 1  # verified with an output
FAILED: Final = 2  # a verified failure code, or out of attempts
DISPUTED: Final = 3
_KINDS: Final = {VERIFIED: "verified", FAILED: "failed", DISPUTED: "disputed"}
_LETTERS: Final = bytes.maketrans(bytes([UNDECIDED, VERIFIED, FAILED, DISPUTED]), b"qvfd")


def _another_is_free(sub: _Subtask, replica: int) -> bool:
    """Whether ``replica`` is bound to a node while another replica of the subtask is queued and bound to none.

    A lapsed lease leaves its holder bound (it may still report); granting that
    replica to a second node would bind both to it, and with two nodes nobody
    could then run the other one. Measured: a 1,000,000-subtask job on two nodes
    whose owner restarted half way stopped with 75 replicas queued that neither
    node could take (the worker's claims, acknowledged just before the owner
    stopped, were in no snapshot; the owner re-ran those replicas itself).
    """
    taken = set(sub.bound.values())
    return replica in taken and any(
        slot.state == "queued" and r not in taken for r, slot in enumerate(sub.slots) if r != replica
    )


def _may_take(sub: _Subtask, peer: PeerId, replica: int) -> bool:
    """Whether ``peer`` may run ``replica`` of ``sub``: it is bound to none, or to this one, or its binding is stale.

    A binding goes stale when someone else has the replica - took it over after the
    peer's lease lapsed, or reported it - and the peer has reported nothing for the
    subtask: it will never be heard on that replica, and if it stayed bound there the
    replicas added later could run out of nodes allowed to take them. Measured: three
    nodes, replicas 2, the owner restarted four times mid-job; a past holder reported
    the replica its successor held, a third replica was added, and all three nodes were
    bound to the first two: the job waited forever with one replica queued.
    """
    bound = sub.bound.get(peer)
    if bound is None or bound == replica:
        return True
    if not 0 <= bound < len(sub.slots) or sub.tally.has_reported(peer):
        return False  # barred from the subtask (``Reopen``), or its result is in
    slot = sub.slots[bound]
    return slot.state == "reported" or (slot.state == "leased" and slot.holder != peer)


def status_kind(status: str) -> int:
    """The kind of a journalled verdict from its status: "ok", "disputed", or a failure code."""
    return VERIFIED if status == "ok" else DISPUTED if status == "disputed" else FAILED


@dataclass(slots=True)
class _Slot:
    state: Literal["queued", "leased", "reported"] = "queued"
    holder: PeerId | None = None
    expires: float = 0.0
    deadline: float = float("inf")  # the holder keeps it no longer than this (``max_hold`` from its grant)
    via: PeerId | None = None  # who handed it to the holder, until the holder renews it


@dataclass(slots=True)
class _Subtask:
    tally: Tally
    slots: list[_Slot]
    bound: dict[PeerId, int] = field(default_factory=dict)  # node -> the one replica it may run
    lost: dict[PeerId, str] = field(default_factory=dict)  # nodes that took it and never answered, latest last
    pending_bytes: int = 0  # the sizes of the distinct outputs claimed so far
    alone: PeerId | None = None  # adaptive: the trusted executor that may decide it alone
    checked: bool = False  # adaptive: its single result drew a spot check
    revising: bool = False  # reopened: decided before, to be decided again by a quorum


class JobOwner:
    """The owner's state machine for one job. Feed it events with ``handle``; carry out what it returns.

    Args:
        job_id: the manifest's job ID.
        owner: this node.
        replication: the manifest's replication policy.
        subtask_count: the number of subtasks.
        lease_seconds: how long a grant or renewal holds a replica.
        max_attempts: how many distinct nodes may take a subtask and never answer before it fails.
        max_open: how many subtasks may be in flight (granted, not decided) at once.
        max_pending_bytes: no subtask is opened while the outputs claimed for open ones exceed this.
        max_hold: how long one holder may keep one replica, renewals included (default: 20 leases).
        trust: adaptive replication: the owner's book of trusted executors (``replication`` then says what a
            quorum is, when one is needed); None for fixed replication.
        draw: adaptive replication: a random number in [0, 1) per draw, unknown to every executor.

    Raises:
        ValueError: an inconsistent policy or a non-positive count, time or limit.
    """

    def __init__(
        self, job_id: bytes, owner: PeerId, replication: Replication, subtask_count: int,
        *, lease_seconds: float = 30.0, max_attempts: int = 3, max_open: int = DEFAULT_MAX_OPEN,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES, max_hold: float | None = None,
        trust: TrustBook | None = None, draw: Callable[[], float] | None = None,
    ) -> None:  # fmt: skip
        problem = replication.check()
        if trust is not None and (draw is None or replication.quorum < 2):
            problem = problem or "adaptive replication needs a random source and a quorum of 2 or more"
        if problem or min(subtask_count, max_attempts, max_open, max_pending_bytes) < 1 or lease_seconds <= 0:
            raise ValueError(problem or "subtask_count, lease_seconds, max_attempts and the limits must be positive")
        self.job_id, self.owner, self.replication = job_id, owner, replication
        self.lease_seconds, self.max_attempts = lease_seconds, max_attempts
        self.max_open, self.max_pending_bytes = max_open, max_pending_bytes
        self.max_hold = 20 * lease_seconds if max_hold is None else max_hold
        if not self.max_hold > 0:
            raise ValueError("max_hold must be positive")
        self._trust, self._draw = trust, draw
        self._first = 1 if trust is not None else max(replication.replicas, replication.quorum)
        self._fuel = [0, 0]  # adaptive: the agreed fuel of verified subtasks, and how many
        self._n = subtask_count
        self._status = bytearray(subtask_count)  # UNDECIDED, VERIFIED, FAILED or DISPUTED
        self._cursor = 0  # every subtask from here on is untouched (or decided, after a restore)
        self._decided_ahead = 0  # decided subtasks at or past the cursor (settled from the journal)
        self._open: dict[int, _Subtask] = {}
        self._ahead: Counter[PeerId] = Counter()  # node -> how many open subtasks bind it (O(1) for _room_for)
        self._queue: list[ReplicaRef] = []  # queued replicas of open subtasks, sorted
        self._leased: set[ReplicaRef] = set()
        self._next_expiry = float("inf")  # no lease expires before this (a lower bound)
        self._pending_bytes = 0
        self._requests: dict[PeerId, tuple[int, tuple[ReplicaRef, ...]]] = {}  # thief -> last id, its grant
        self._counts = {"verified": 0, "failed": 0, "disputed": 0}
        self.finished = False
        self.cancelled = False

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event and return what the node must do about it.

        Raises:
            TypeError: ``event`` is not one of the job's events.
        """
        match event:
            case StealRequest():
                return self._steal(event)
            case ClaimReceived():
                return self._claim(event.claim, event.untrusted, event.now)
            case RenewLeases():
                return self._renew(event.holder, event.replicas, event.now)
            case TransferReplicas():
                return self._transfer(event)
            case ReleaseReplicas():
                for ref in event.replicas:
                    if self._holder(ref) == event.holder:
                        self._requeue(ref)
                return []
            case PeerLeft():
                return self._lapse([r for r in self._leased if self._holder(r) == event.peer], PEER_GONE)
            case Tick():
                return self._tick(event.now)
            case Cancel():
                return self._cancel()
            case Reopen():
                return self._reopen(event)
        raise TypeError(f"a job owner does not handle {type(event).__name__}")

    def _cancel(self) -> list[Instruction]:
        """Stop handing out work: open subtasks close, leases are revoked; the job is finished."""
        revoked: dict[PeerId, list[ReplicaRef]] = {}
        for ref in sorted(self._leased):
            revoked.setdefault(self._slot(ref).holder or self.owner, []).append(ref)
        self._open.clear()
        self._ahead.clear()
        self._queue.clear()
        self._leased.clear()
        self._pending_bytes = 0
        self.finished = self.cancelled = True
        return [Revoke(p, tuple(refs), "the job was cancelled") for p, refs in revoked.items()]

    # --- queries -----------------------------------------------------------------------

    @property
    def subtask_count(self) -> int:
        return self._n

    @property
    def adaptive(self) -> bool:
        return self._trust is not None

    def surplus(self) -> int:
        """Replicas that could be granted now (for the presence message)."""
        if self.cancelled:
            return 0
        return len(self._queue) + self._first * min(self._fresh_left(), self._room())

    def progress(self) -> Progress:
        c = self._counts
        running = len({ref.index for ref in self._leased})
        working = len({self._slot(ref).holder for ref in self._leased})
        queued = len(self._queue) + (0 if self.cancelled else self._first * self._fresh_left())
        return Progress(self._n, c["verified"], c["failed"], c["disputed"], running, queued, working)

    def has_work_for(self, peer: PeerId) -> bool:
        """Whether a steal request from ``peer`` would be granted anything now.

        A job can have surplus that ``peer`` may not take (replicas of subtasks it
        already runs): its owner's slots must then look for work elsewhere.
        """
        if self.cancelled:
            return False
        if self._fresh_left() and self._room_for(peer):
            return True
        return any(_may_take(self._open[ref.index], peer, ref.replica) for ref in self._queue)

    def held_back(self, peer: PeerId) -> bool:
        """Whether ``peer`` is given no new subtasks only because it runs ``MAX_AHEAD`` ahead of the others.

        That passes as soon as the others report on the subtasks it is bound to, so a
        thief told so comes back soon, not when it next hears of new work.
        """
        return not self.cancelled and self._fresh_left() > 0 and self._room() > 0 and self._room_for(peer) == 0

    def status(self, index: int) -> str | None:
        """"verified", "failed" or "disputed" once the subtask is decided; None before."""
        return _KINDS.get(self._status[index])

    def state_letters(self) -> str:
        """One letter per subtask, in index order: ``v`` verified, ``f`` failed, ``d`` disputed,
        ``r`` running (a replica is leased), ``q`` queued (waiting, or between replicas).

        O(subtasks) and a byte each, for the dashboard's grid of a 10,000-subtask job.
        """
        letters = bytearray(self._status.translate(_LETTERS))
        for index, sub in self._open.items():
            if any(slot.state == "leased" for slot in sub.slots):
                letters[index] = ord("r")
        return letters.decode("ascii")

    def is_open(self, index: int) -> bool:
        """Granted at least once and not decided: its claims are being gathered."""
        return index in self._open

    def open_count(self) -> int:
        return len(self._open)

    # --- transitions -------------------------------------------------------------------

    def _fresh_left(self) -> int:
        return self._n - self._cursor - self._decided_ahead

    def _room(self) -> int:
        """How many more subtasks may be opened now."""
        if self.cancelled or self._pending_bytes >= self.max_pending_bytes:
            return 0
        return max(0, self.max_open - len(self._open))

    def _room_for(self, peer: PeerId) -> int:
        """How many more subtasks may be opened for ``peer`` now: ``_room``, or less if it runs far ahead."""
        room = self._room()
        if room <= 0 or not self._open:
            return min(room, MAX_AHEAD)
        return min(room, max(0, MAX_AHEAD - self._ahead[peer]))

    def _bind(self, sub: _Subtask, peer: PeerId, replica: int) -> int:
        """Bind ``peer`` to ``replica`` of ``sub`` unless it is bound already; the replica it is bound to."""
        if peer not in sub.bound:
            self._ahead[peer] += 1
            sub.bound[peer] = replica
        return sub.bound[peer]

    def _take(self, sub: _Subtask, peer: PeerId, replica: int) -> bool:
        """Bind ``peer`` to ``replica`` if it may take it (``_may_take``), moving a stale binding; whether it may."""
        if not _may_take(sub, peer, replica):
            return False
        if peer not in sub.bound:
            self._ahead[peer] += 1
        sub.bound[peer] = replica
        return True

    def _unbind(self, sub: _Subtask, peer: PeerId) -> None:
        del sub.bound[peer]
        self._forget_ahead(peer)

    def _forget_ahead(self, peer: PeerId) -> None:
        self._ahead[peer] -= 1
        if not self._ahead[peer]:
            del self._ahead[peer]

    def _close(self, index: int) -> _Subtask:
        """Take subtask ``index`` out of the open ones (its queue and leases are the caller's)."""
        sub = self._open.pop(index)
        self._pending_bytes -= sub.pending_bytes
        for peer in sub.bound:
            self._forget_ahead(peer)
        return sub

    def _open_next(self) -> int | None:
        """Open the next untouched subtask; its index, or None if none is left or there is no room."""
        if self._room() <= 0:
            return None
        while self._cursor < self._n and self._status[self._cursor] != UNDECIDED:
            self._cursor += 1  # decided while a restarted owner had not reached it yet
            self._decided_ahead -= 1
        if self._cursor >= self._n:
            return None
        index = self._cursor
        self._cursor += 1
        self._open[index] = _Subtask(Tally(self.job_id, index, self.replication), [_Slot() for _ in range(self._first)])
        self._queue.extend(ReplicaRef(index, r) for r in range(self._first))  # past every open index: sorted
        return index

    def _slot(self, ref: ReplicaRef) -> _Slot:
        return self._open[ref.index].slots[ref.replica]

    def _state(self, ref: ReplicaRef) -> str:
        """The replica's state, or "unknown" for a replica no open subtask has."""
        sub = self._open.get(ref.index)
        return sub.slots[ref.replica].state if sub is not None and 0 <= ref.replica < len(sub.slots) else "unknown"

    def _holder(self, ref: ReplicaRef) -> PeerId | None:
        return self._slot(ref).holder if self._state(ref) == "leased" else None

    def _lease(self, ref: ReplicaRef, holder: PeerId, expires: float) -> None:
        if self._slot(ref).state == "queued":
            del self._queue[bisect.bisect_left(self._queue, ref)]
        deadline = expires - self.lease_seconds + self.max_hold
        self._open[ref.index].slots[ref.replica] = _Slot("leased", holder, min(expires, deadline), deadline=deadline)
        self._leased.add(ref)
        self._next_expiry = min(self._next_expiry, expires, deadline)

    def _requeue(self, ref: ReplicaRef) -> None:
        self._open[ref.index].slots[ref.replica] = _Slot()
        self._leased.discard(ref)
        bisect.insort(self._queue, ref)

    def _steal(self, e: StealRequest) -> list[Instruction]:
        expires = e.now + self.lease_seconds
        last = self._requests.get(e.thief)
        if last is not None and e.request_id <= last[0]:
            if e.request_id < last[0]:
                return []  # stale: the thief has moved on and would drop any answer
            held = tuple(ref for ref in last[1] if self._holder(ref) == e.thief)
            for ref in held:
                self._slot(ref).expires = expires
            if held:
                return [Grant(e.thief, e.request_id, held, expires)]
            # nothing of that grant is still the thief's: answer the retransmission as a new request
        picked: list[ReplicaRef] = []
        for ref in self._queue:
            if len(picked) >= e.n:
                break
            sub = self._open[ref.index]
            if e.thief not in sub.bound and _another_is_free(sub, ref.replica):
                continue  # someone whose lease lapsed is bound to this one and may still report it: take the free one
            # _take binds the thief to its first replica of this subtask; the others then fail the test
            if self._take(sub, e.thief, ref.replica):
                picked.append(ref)
        room = self._room_for(e.thief)
        while len(picked) < e.n and room > 0 and (index := self._open_next()) is not None:
            self._bind(self._open[index], e.thief, 0)
            picked.append(ReplicaRef(index, 0))
            room -= 1
        added: list[ReplicaRef] = []
        for ref in picked:
            self._lease(ref, e.thief, expires)
            added += self._adapt(ref, e.thief, e.now)
        self._requests[e.thief] = (e.request_id, tuple(picked))
        out: list[Instruction] = [Grant(e.thief, e.request_id, tuple(picked), expires)]
        return out + ([ReplicasAdded(tuple(added), "untrusted")] if added else [])

    def _adapt(self, ref: ReplicaRef, holder: PeerId, now: float) -> list[ReplicaRef]:
        """Adaptive: the lone replica of a subtask goes to ``holder``; a second one if ``holder`` is not trusted."""
        sub = self._open[ref.index]
        if self._trust is None or len(sub.slots) > 1 or sub.revising:
            return []
        if self._trusts(holder, now):
            sub.alone = holder
            return []
        sub.alone = None
        return self._add_replicas(ref.index, 1)

    def _trusts(self, peer: PeerId, now: float) -> bool:
        assert self._trust is not None
        total, count = self._fuel
        return self._trust.trusted(peer, total / count if count else 0.0, now)

    def _add_replicas(self, index: int, n: int) -> list[ReplicaRef]:
        sub = self._open[index]
        added = []
        for _ in range(min(n, self.replication.max_replicas - len(sub.slots))):
            added.append(ReplicaRef(index, len(sub.slots)))
            sub.slots.append(_Slot())
            bisect.insort(self._queue, added[-1])
        return added

    def _transfer(self, e: TransferReplicas) -> list[Instruction]:
        expires, moved = e.now + self.lease_seconds, []
        for ref in e.replicas:
            sub = self._open[ref.index] if self._holder(ref) == e.holder and e.to != e.holder else None
            if sub is None or not self._take(sub, e.to, ref.replica):
                continue  # not the holder's to give, or the new thief runs another replica of this subtask
            self._unbind(sub, e.holder)  # it gives the replica up unrun: it may take another of this subtask later
            moved.append(ref)
            if e.to == self.owner:  # back to the owner's own slots: queued, and theirs to take
                self._requeue(ref)
                continue
            deadline = e.now + self.max_hold
            sub.slots[ref.replica] = _Slot("leased", e.to, min(expires, deadline), via=e.holder, deadline=deadline)
            self._next_expiry = min(self._next_expiry, expires, deadline)
        added = [a for ref in moved for a in self._adapt(ref, e.to, e.now)] if e.to != self.owner else []
        out: list[Instruction] = [Transferred(e.holder, e.to, tuple(moved), expires)]
        return out + ([ReplicasAdded(tuple(added), "untrusted")] if added else [])

    def _renew(self, holder: PeerId, refs: tuple[ReplicaRef, ...], now: float) -> list[Instruction]:
        expires, renewed, lost = now + self.lease_seconds, [], []
        for ref in refs:
            if self._holder(ref) == holder:
                slot = self._slot(ref)
                slot.expires = min(expires, slot.deadline)  # renewed, but never past the bound on holding it
                slot.via = None  # it has the replica: from now on, a lapse is its own
                renewed.append(ref)
            elif (
                self._state(ref) == "queued" and self._open[ref.index].bound.get(holder) == ref.replica
                and self._open[ref.index].lost.get(holder) != HELD_TOO_LONG
            ):  # fmt: skip
                # its lease lapsed but nobody has taken the replica over: it is still working, let it finish
                self._lease(ref, holder, expires)
                self._open[ref.index].lost.pop(holder, None)
                renewed.append(ref)
            else:
                lost.append(ref)
        out: list[Instruction] = [Renewed(holder, tuple(renewed), expires)] if renewed else []
        return out + ([Revoke(holder, tuple(lost), "lease lost")] if lost else [])

    def _claim(self, c: ResultClaim, untrusted: Set[PeerId], now: float) -> list[Instruction]:
        ref = ReplicaRef(c.index, c.replica)
        if c.job_id == self.job_id and 0 <= c.index < self._n and self._status[c.index] != UNDECIDED:
            return [Ack(c.executor, ref, "late", "the subtask is already decided")]
        if self.cancelled and c.job_id == self.job_id:
            return [Ack(c.executor, ref, "late", "the job was cancelled")]
        sub = self._open.get(c.index) if c.job_id == self.job_id else None
        if sub is None or sub.bound.get(c.executor) != c.replica:
            return [Ack(c.executor, ref, "rejected", "this replica was never granted to this executor")]
        if sub.tally.has_reported(c.executor):
            return [Ack(c.executor, ref, "duplicate")]
        out: list[Instruction] = [Ack(c.executor, ref, "accepted")]
        slot = sub.slots[c.replica]
        if slot.state == "leased" and slot.holder not in (None, c.executor):
            out.append(Revoke(slot.holder, (ref,), "a past holder reported it"))
        if slot.state == "queued":
            del self._queue[bisect.bisect_left(self._queue, ref)]
        sub.slots[c.replica] = _Slot("reported", c.executor)
        self._leased.discard(ref)
        sub.lost.pop(c.executor, None)  # it answered after all
        if c.status == "ok" and not any(k.agreement_key() == c.agreement_key() for k in sub.tally.claims):
            sub.pending_bytes += c.output_size  # a new candidate output, held until the verdict
            self._pending_bytes += c.output_size
        verdict = sub.tally.add(c, untrusted)
        assert not isinstance(verdict, Duplicate)  # has_reported() ruled that out
        if not isinstance(verdict, Pending):
            return out + self._decide(c.index, verdict)
        if sub.alone is not None and len(sub.slots) == 1:
            return out + self._single(c, untrusted, now)
        return out + self._setback(c.index, verdict.more)

    def _single(self, c: ResultClaim, untrusted: Set[PeerId], now: float) -> list[Instruction]:
        """Adaptive: the lone replica's result is in. Accept it alone, or draw a spot check."""
        assert self._trust is not None and self._draw is not None
        sub = self._open[c.index]
        trusted = c.executor == sub.alone and c.status == "ok" and c.executor not in untrusted
        trusted = trusted and self._trusts(c.executor, now)  # it may have been caught elsewhere since the grant
        if trusted and self._draw() >= self._trust.check_probability(c.executor, now):
            return self._decide(c.index, sub.tally.accept_alone())
        sub.checked = trusted
        added = self._add_replicas(c.index, 1)
        return [ReplicasAdded(tuple(added), "spot_check" if trusted else "untrusted")] if added else []

    def _setback(self, index: int, more: int) -> list[Instruction]:
        """No verdict yet: give up after too many lost attempts, or make sure ``more`` replicas are coming."""
        sub = self._open[index]
        if len(sub.lost) >= self.max_attempts:
            holder, reason = list(sub.lost.items())[-1]
            why = reason.replace("_", " ")
            message = f"{len(sub.lost)} nodes took it and never answered; the last, {holder}: {why}"
            return self._decide(index, Failed(reason, message))
        outstanding = sum(slot.state in ("queued", "leased") for slot in sub.slots)
        added = self._add_replicas(index, more - outstanding)
        return [ReplicasAdded(tuple(added))] if added else []

    def _tick(self, now: float) -> list[Instruction]:
        if now < self._next_expiry:
            return []  # renewals only push expiries later: nothing can have lapsed yet
        expired = [r for r in self._leased if self._slot(r).expires <= now]
        held = {r for r in expired if self._slot(r).expires >= self._slot(r).deadline}
        out = self._lapse([r for r in expired if r not in held], LEASE_LAPSED) + self._lapse(list(held), HELD_TOO_LONG)
        self._next_expiry = min((self._slot(r).expires for r in self._leased), default=float("inf"))
        return out

    def _lapse(self, refs: list[ReplicaRef], reason: str) -> list[Instruction]:
        out: list[Instruction] = []
        for ref in sorted(refs):
            holder = self._holder(ref)
            if holder is None:
                continue  # dropped by a verdict reached earlier in this loop
            # a replica handed over and never renewed by its new holder: the attempt is the old
            # holder's, and nobody's reputation pays (either could be framing the other)
            via = self._slot(ref).via
            holder = via or holder
            self._requeue(ref)
            lost = self._open[ref.index].lost
            lost.pop(holder, None)  # re-insert: the latest loss is the last entry
            lost[holder] = reason
            out += [ReplicaLost(holder, ref, reason, credible=via is None), *self._setback(ref.index, 0)]
        return out

    def _decide(self, index: int, outcome: Outcome) -> list[Instruction]:
        sub = self._close(index)
        revoked: dict[PeerId, list[ReplicaRef]] = {}
        for r, slot in enumerate(sub.slots):
            ref = ReplicaRef(index, r)
            if slot.state == "queued":
                del self._queue[bisect.bisect_left(self._queue, ref)]
            elif slot.state == "leased" and slot.holder is not None:
                revoked.setdefault(slot.holder, []).append(ref)
                self._leased.discard(ref)
        ok = isinstance(outcome, Verified) and outcome.ok
        self._mark(index, DISPUTED if isinstance(outcome, Disputed) else VERIFIED if ok else FAILED)
        out: list[Instruction] = [Revoke(p, tuple(refs), "the subtask is decided") for p, refs in revoked.items()]
        how: VerifiedBy = "quorum"
        if isinstance(outcome, Verified):
            if len(outcome.counted) == 1:
                how = "single"
            elif sub.checked and sub.alone in outcome.counted:
                how = "single+spotcheck"
            if ok and outcome.fuel:
                self._fuel[0] += max(f for _, f in outcome.fuel)
                self._fuel[1] += 1
        out.append(SubtaskDecided(index, outcome, how, revised=sub.revising))
        if not self.finished and self._decided() == self._n:
            self.finished = True
            out.append(JobFinished(self.progress()))
        return out

    def _reopen(self, e: Reopen) -> list[Instruction]:
        """Undo the verdicts of ``e.indices`` that are decided: a quorum without ``e.distrusted`` decides them again.

        Only subtasks before the cursor are reopened (``Reopened`` names them).
        """
        if self.cancelled:
            return []
        reopened = []
        slots = max(2, self.replication.quorum) if self._trust is not None else self._first
        for index in sorted(set(e.indices)):
            # past the cursor, a verdict came from the journal of a restarted owner that has not opened the
            # subtask yet; such a rare one stays as it is and the driver lists it for a recheck
            if not 0 <= index < self._cursor or self._status[index] == UNDECIDED:
                continue
            self._counts[_KINDS[self._status[index]]] -= 1
            self._status[index] = UNDECIDED
            sub = _Subtask(Tally(self.job_id, index, self.replication), [_Slot() for _ in range(slots)], revising=True)
            self._bind(sub, e.distrusted, _BARRED)
            self._open[index] = sub
            for r in range(slots):
                bisect.insort(self._queue, ReplicaRef(index, r))
            reopened.append(index)
        if not reopened:
            return []
        self.finished = False
        return [Reopened(tuple(reopened), e.distrusted)]

    def _mark(self, index: int, kind: int) -> None:
        self._status[index] = kind
        self._counts[_KINDS[kind]] += 1

    def _decided(self) -> int:
        return sum(self._counts.values())

    # --- persistence -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The window, as a plain JSON-compatible dict: with the journal's verdicts, all a restart needs."""
        r = self.replication
        return {
            "format": _FORMAT, "job_id": self.job_id.hex(), "owner": str(self.owner),
            "replication": [r.replicas, r.quorum, r.max_replicas], "subtask_count": self._n,
            "lease_seconds": self.lease_seconds, "max_attempts": self.max_attempts,
            "max_open": self.max_open, "max_pending_bytes": self.max_pending_bytes, "max_hold": self.max_hold,
            "cursor": self._cursor,
            "requests": {str(p): last[0] for p, last in self._requests.items()},
            "open": [[index, _snapshot_subtask(sub)] for index, sub in self._open.items()],
            "adaptive": self._trust is not None, "fuel": list(self._fuel),
        }  # fmt: skip

    @classmethod
    def restore(
        cls, snapshot: Mapping[str, Any], journalled: Iterable[tuple[int, str]] = (),
        *, trust: TrustBook | None = None, draw: Callable[[], float] | None = None,
    ) -> JobOwner:  # fmt: skip
        """Rebuild a job from ``snapshot``'s output and the verdicts its journal holds.

        Args:
            snapshot: any snapshot this job wrote, however old.
            journalled: every verdict the journal holds, as (index, status): "ok",
                "disputed" or a failure code (a verdict being decided again, after ``Reopen``, is not one).
            trust, draw: the owner's trust book and random source, for a job with adaptive replication
                (a job with fixed replication ignores them).

        Raises:
            ValueError: the snapshot is not one this version can read, or is inconsistent,
                or a verdict names no subtask of the job.
        """
        try:
            job = cls._restore(snapshot, trust, draw)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, WireError) as exc:
            raise ValueError(f"not a usable job snapshot: {exc}") from exc
        job._settle(journalled)
        return job

    @classmethod
    def _restore(cls, d: Mapping[str, Any], trust: TrustBook | None, draw: Callable[[], float] | None) -> JobOwner:
        if d["format"] not in _READS:
            raise ValueError(f"unknown format {d['format']!r}")
        adaptive = bool(d.get("adaptive", False))
        if adaptive and trust is None:
            raise ValueError("an adaptive job needs the owner's trust book")
        policy = Replication(*(int(n) for n in d["replication"]))
        job = cls(
            bytes.fromhex(d["job_id"]), PeerId.from_base58(d["owner"]), policy, int(d["subtask_count"]),
            lease_seconds=float(d["lease_seconds"]), max_attempts=int(d["max_attempts"]),
            max_open=int(d["max_open"]), max_pending_bytes=int(d["max_pending_bytes"]),
            max_hold=float(d["max_hold"]) if "max_hold" in d else None,
            trust=trust if adaptive else None, draw=draw if adaptive else None,
        )  # fmt: skip
        total, count = (int(n) for n in d.get("fuel", (0, 0)))
        job._fuel = [total, count]
        job._cursor = int(d["cursor"])
        if not 0 <= job._cursor <= job._n:
            raise ValueError("the cursor lies outside the job")
        job._requests = {PeerId.from_base58(p): (int(i), ()) for p, i in d["requests"].items()}
        for index, s in d["open"]:
            index = int(index)
            if not 0 <= index < job._cursor or index in job._open:
                raise ValueError(f"open subtask {index} was never opened, or is there twice")
            claims = [decode(bytes.fromhex(h), ResultClaim) for h in s["claims"]]
            sub = _Subtask(Tally.replay(job.job_id, index, policy, claims, None), [])
            sub.slots = [_Slot("reported" if r in s["reported"] else "queued") for r in range(int(s["slots"]))]
            for p, r in s["bound"].items():
                job._bind(sub, PeerId.from_base58(p), int(r))
            sub.lost = {PeerId.from_base58(p): str(reason) for p, reason in s["lost"]}
            sub.pending_bytes = int(s["pending_bytes"])
            sub.alone = PeerId.from_base58(s["alone"]) if s.get("alone") else None
            sub.checked, sub.revising = bool(s.get("checked", False)), bool(s.get("revising", False))
            job._open[index] = sub
            job._pending_bytes += sub.pending_bytes
            job._queue.extend(ReplicaRef(index, r) for r, slot in enumerate(sub.slots) if slot.state == "queued")
        job._queue.sort()
        return job

    def _settle(self, journalled: Iterable[tuple[int, str]]) -> None:
        """Take the journal's verdicts, then reopen what was opened and neither is open nor decided."""
        closed = set()
        for index, status in journalled:
            if not 0 <= index < self._n:
                raise ValueError(f"the journal holds a verdict for subtask {index} of a {self._n}-subtask job")
            if self._status[index] != UNDECIDED:
                continue
            self._mark(index, status_kind(status))
            if index in self._open:
                self._close(index)
                closed.add(index)
            elif index >= self._cursor:
                self._decided_ahead += 1
        if closed:
            self._queue = [ref for ref in self._queue if ref.index not in closed]
        # A verdict reached before the snapshot but never journalled (the process died, or the
        # disk was full, in between): that subtask is in neither place, and must run again.
        missing = []
        at = self._status.find(UNDECIDED, 0, self._cursor)
        while at != -1:
            if at not in self._open:
                missing.append(at)
            at = self._status.find(UNDECIDED, at + 1, self._cursor)
        for index in missing:
            self._open[index] = _Subtask(Tally(self.job_id, index, self.replication), [_Slot() for _ in range(self._first)])
            self._queue.extend(ReplicaRef(index, r) for r in range(self._first))
        if missing:
            self._queue.sort()
        self.finished = self._decided() == self._n


def _snapshot_subtask(sub: _Subtask) -> dict[str, Any]:
    return {
        "slots": len(sub.slots),
        "reported": [r for r, slot in enumerate(sub.slots) if slot.state == "reported"],
        "bound": {str(p): r for p, r in sub.bound.items()},
        "lost": [[str(p), reason] for p, reason in sub.lost.items()],  # a list: its order says which was last
        "claims": [encode(c).hex() for c in sub.tally.claims],
        "pending_bytes": sub.pending_bytes,
        "alone": None if sub.alone is None else str(sub.alone), "checked": sub.checked, "revising": sub.revising,
    }  # fmt: skip
