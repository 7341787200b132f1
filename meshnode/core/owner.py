"""The owner's state machine for one job: replicas, leases, claims and verdicts.

Its events and instructions are in ``job.py``.

Theory of operation:

Each subtask starts with ``max(replicas, quorum)`` replicas (fewer could never
verify). Every replica ``(index, replica)`` is in one state:

    state     leaves by                                               to
    --------  ------------------------------------------------------  --------
    queued    a grant to a thief, or to the owner's own slots          leased
    leased    a claim from a node bound to this replica                reported
              its lease lapses (tick), its holder leaves or releases  queued
    reported  (never)
    any       the subtask's verdict: queued replicas are dropped,     dropped
              leased ones revoked

*Binding*: the first grant of any replica of a subtask to a node binds that node
to that replica, for good. It may be granted the same replica again (its lease
lapsed while it kept working, say) but never another one, so no node runs two
replicas of one subtask. A claim is accepted only from a node bound to the
replica it names - the holder, or a past holder whose lease lapsed while it kept
working - and once per executor: a replayed claim is acknowledged and ignored.

After each accepted claim the subtask's ``Tally`` judges it (``verify.py``). A
final verdict ends the subtask; a pending one asks for ``more`` executors, and
replicas are added (never beyond ``max_replicas``) to cover what is not already
queued or running. *Attempts*: a node that took a replica and never answered
(its lease lapsed, or it left) counts once, until it does answer; at
``max_attempts`` distinct nodes the subtask fails with the last error. This is
what stops a subtask that crashes whoever runs it. A failure code in a claim is
not an attempt but a result: the verifier weighs it like any other, so one
byzantine "trap" cannot fail a subtask honest peers can run.

The deque of queued replicas is sorted by (index, replica): thieves are granted
from the cold end (highest index), the owner's own slots from the hot end, so
the two meet only at the end of the job, as in a work-stealing deque.

*Stale requests*: stealing is transactional - the grant is the owner's
confirmation, and a thief runs nothing before it has one. Each steal request
carries an id the thief chose, growing per thief, and the grant echoes it. A
repeat of the thief's last id is a retransmission: it gets what it still holds
of that grant, with fresh leases, and nothing more. An older id is stale and
dropped, as distributed's stealing drops a confirmation whose stimulus id is not
current; a thief that receives a grant for a request it gave up on hands the
replicas back with ``ReleaseReplicas`` (no attempt is counted).

*Stealing from thieves*: a thief robbed in turn hands replicas it has not
started to the new thief only through the owner (``TransferReplicas``): the
owner moves the lease and the binding - the old holder never ran the replica,
so it is unbound from it, and the new one must not be bound to another replica
of that subtask - and answers which replicas moved. Until the new holder renews
a moved replica, a lapse of its lease is the old holder's attempt, and nobody's
failure: either thief could be framing the other. Nothing is ever in two
hands, and a claim is still accepted only from the node bound to its replica.

*Cancel*: ``cancel`` drops every queued replica and revokes every lease; the
undecided subtasks stay undecided and the job counts as finished.

*Crash*: ``snapshot`` is a plain dict of everything that matters; ``restore``
puts leased replicas back in the deque (their holders stay bound, so their
claims are still accepted and their renewals revive the lease). Verdicts are
replayed from the recorded claims; nothing verified is run again.

Time is an argument (seconds on a monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..errors import WireError
from .job import (
    LEASE_LAPSED, PEER_GONE, Ack, ClaimReceived, Event, Failed, Grant, Instruction, JobFinished, Outcome,
    PeerLeft, Progress, ReleaseReplicas, RenewLeases, Renewed, ReplicaLost, ReplicaRef, ReplicasAdded,
    Revoke, StealRequest, SubtaskDecided, TransferReplicas, Transferred,
)  # fmt: skip
from .manifest import Replication
from .peer_id import PeerId
from .result import ResultClaim
from .verify import Disputed, Duplicate, Pending, Tally, Verified
from .wire import decode, encode

__all__ = ["JobOwner"]

_FORMAT: Final = 1


@dataclass(slots=True)
class _Slot:
    state: Literal["queued", "leased", "reported", "dropped"] = "queued"
    holder: PeerId | None = None
    expires: float = 0.0
    via: PeerId | None = None  # who handed it to the holder, until the holder renews it


@dataclass(slots=True)
class _Subtask:
    tally: Tally
    slots: list[_Slot]
    bound: dict[PeerId, int] = field(default_factory=dict)  # node -> the one replica it may run
    lost: dict[PeerId, str] = field(default_factory=dict)  # nodes that took it and never answered, latest last
    outcome: Outcome | None = None


class JobOwner:
    """The owner's state machine for one job. Feed it events with ``handle``; carry out what it returns.

    Args:
        job_id: the manifest's job ID.
        owner: this node (its steal requests take from the hot end).
        replication: the manifest's replication policy.
        subtask_count: the number of subtasks.
        lease_seconds: how long a grant or renewal holds a replica.
        max_attempts: how many distinct nodes may take a subtask and never answer before it fails.

    Raises:
        ValueError: an inconsistent policy or a non-positive count, time or attempt limit.
    """

    def __init__(
        self, job_id: bytes, owner: PeerId, replication: Replication, subtask_count: int,
        *, lease_seconds: float = 30.0, max_attempts: int = 3,
    ) -> None:  # fmt: skip
        problem = replication.check()
        if problem or subtask_count < 1 or lease_seconds <= 0 or max_attempts < 1:
            raise ValueError(problem or "subtask_count, lease_seconds and max_attempts must be positive")
        self.job_id, self.owner, self.replication = job_id, owner, replication
        self.lease_seconds, self.max_attempts = lease_seconds, max_attempts
        first = max(replication.replicas, replication.quorum)
        self._subtasks = [
            _Subtask(Tally(job_id, i, replication), [_Slot() for _ in range(first)]) for i in range(subtask_count)
        ]
        self._queue = [ReplicaRef(i, r) for i in range(subtask_count) for r in range(first)]  # sorted
        self._leased: set[ReplicaRef] = set()
        self._requests: dict[PeerId, tuple[int, tuple[ReplicaRef, ...]]] = {}  # thief -> last id, its grant
        self._counts = {"verified": 0, "failed": 0, "disputed": 0}
        self.finished = False
        self.cancelled = False

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event and return what the node must do about it."""
        if isinstance(event, StealRequest):
            return self._steal(event)
        if isinstance(event, ClaimReceived):
            return self._claim(event.claim, event.untrusted)
        if isinstance(event, RenewLeases):
            return self._renew(event.holder, event.replicas, event.now)
        if isinstance(event, TransferReplicas):
            return self._transfer(event)
        if isinstance(event, ReleaseReplicas):
            for ref in event.replicas:
                if self._holder(ref) == event.holder:
                    self._requeue(ref)
            return []
        if isinstance(event, PeerLeft):
            return self._lapse([r for r in self._leased if self._holder(r) == event.peer], PEER_GONE)
        return self._lapse([r for r in self._leased if self._slot(r).expires <= event.now], LEASE_LAPSED)

    def cancel(self) -> list[Instruction]:
        """Stop handing out work: queued replicas are dropped, leased ones revoked; the job is finished."""
        revoked: dict[PeerId, list[ReplicaRef]] = {}
        for ref in sorted(self._leased):
            revoked.setdefault(self._slot(ref).holder or self.owner, []).append(ref)
        for ref in [*self._queue, *self._leased]:
            self._subtasks[ref.index].slots[ref.replica] = _Slot("dropped")
        self._queue.clear()
        self._leased.clear()
        self.finished = self.cancelled = True
        return [Revoke(p, tuple(refs), "the job was cancelled") for p, refs in revoked.items()]

    def settle(self, index: int, outcome: Outcome) -> list[Instruction]:
        """Take a verdict the journal already holds (reached after the last snapshot); its replicas are dropped."""
        if self._subtasks[index].outcome is not None:
            return []
        return self._decide(index, outcome)

    # --- queries -----------------------------------------------------------------------

    def surplus(self) -> int:
        """Replicas queued and grantable (for the presence message)."""
        return len(self._queue)

    def progress(self) -> Progress:
        c = self._counts
        running = len({ref.index for ref in self._leased})
        working = len({self._slot(ref).holder for ref in self._leased})
        total = len(self._subtasks)
        return Progress(total, c["verified"], c["failed"], c["disputed"], running, len(self._queue), working)

    def outcome(self, index: int) -> Outcome | None:
        return self._subtasks[index].outcome

    # --- transitions -------------------------------------------------------------------

    def _slot(self, ref: ReplicaRef) -> _Slot:
        return self._subtasks[ref.index].slots[ref.replica]

    def _state(self, ref: ReplicaRef) -> str:
        """The replica's state, or "unknown" for a replica this job does not have."""
        known = 0 <= ref.index < len(self._subtasks) and 0 <= ref.replica < len(self._subtasks[ref.index].slots)
        return self._slot(ref).state if known else "unknown"

    def _holder(self, ref: ReplicaRef) -> PeerId | None:
        return self._slot(ref).holder if self._state(ref) == "leased" else None

    def _lease(self, ref: ReplicaRef, holder: PeerId, expires: float) -> None:
        if self._slot(ref).state == "queued":
            del self._queue[bisect.bisect_left(self._queue, ref)]
        self._subtasks[ref.index].slots[ref.replica] = _Slot("leased", holder, expires)
        self._leased.add(ref)

    def _requeue(self, ref: ReplicaRef) -> None:
        self._subtasks[ref.index].slots[ref.replica] = _Slot()
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
            return [Grant(e.thief, e.request_id, held, expires)]
        picked: list[ReplicaRef] = []
        for ref in self._queue if e.thief == self.owner else reversed(self._queue):
            if len(picked) >= e.n:
                break
            # setdefault binds the thief to its first replica of this subtask; the others then fail the test
            if self._subtasks[ref.index].bound.setdefault(e.thief, ref.replica) == ref.replica:
                picked.append(ref)
        for ref in picked:
            self._lease(ref, e.thief, expires)
        self._requests[e.thief] = (e.request_id, tuple(picked))
        return [Grant(e.thief, e.request_id, tuple(picked), expires)]

    def _transfer(self, e: TransferReplicas) -> list[Instruction]:
        expires, moved = e.now + self.lease_seconds, []
        for ref in e.replicas:
            sub = self._subtasks[ref.index] if self._holder(ref) == e.holder and e.to != e.holder else None
            if sub is None or sub.bound.get(e.to, ref.replica) != ref.replica:
                continue  # not the holder's to give, or the new thief runs another replica of this subtask
            del sub.bound[e.holder]  # it gives the replica up unrun: it may take another of this subtask later
            sub.bound[e.to] = ref.replica
            self._subtasks[ref.index].slots[ref.replica] = _Slot("leased", e.to, expires, via=e.holder)
            moved.append(ref)
        return [Transferred(e.holder, e.to, tuple(moved), expires)]

    def _renew(self, holder: PeerId, refs: tuple[ReplicaRef, ...], now: float) -> list[Instruction]:
        expires, renewed, lost = now + self.lease_seconds, [], []
        for ref in refs:
            if self._holder(ref) == holder:
                self._slot(ref).expires = expires
                self._slot(ref).via = None  # it has the replica: from now on, a lapse is its own
                renewed.append(ref)
            elif self._state(ref) == "queued" and self._subtasks[ref.index].bound.get(holder) == ref.replica:
                # its lease lapsed but nobody has taken the replica over: it is still working, let it finish
                self._lease(ref, holder, expires)
                self._subtasks[ref.index].lost.pop(holder, None)
                renewed.append(ref)
            else:
                lost.append(ref)
        out: list[Instruction] = [Renewed(holder, tuple(renewed), expires)] if renewed else []
        return out + ([Revoke(holder, tuple(lost), "lease lost")] if lost else [])

    def _claim(self, c: ResultClaim, untrusted: Set[PeerId]) -> list[Instruction]:
        ref = ReplicaRef(c.index, c.replica)
        ours = c.job_id == self.job_id and 0 <= c.index < len(self._subtasks)
        sub = self._subtasks[c.index] if ours else None
        if sub is None or sub.bound.get(c.executor) != c.replica:
            return [Ack(c.executor, ref, "rejected", "this replica was never granted to this executor")]
        if sub.tally.has_reported(c.executor):
            return [Ack(c.executor, ref, "duplicate")]
        if sub.outcome is not None:
            return [Ack(c.executor, ref, "late", "the subtask is already decided")]
        out: list[Instruction] = [Ack(c.executor, ref, "accepted")]
        slot = sub.slots[c.replica]
        if slot.state == "leased" and slot.holder not in (None, c.executor):
            out.append(Revoke(slot.holder, (ref,), "a past holder reported it"))
        if slot.state == "queued":
            del self._queue[bisect.bisect_left(self._queue, ref)]
        sub.slots[c.replica] = _Slot("reported", c.executor)
        self._leased.discard(ref)
        sub.lost.pop(c.executor, None)  # it answered after all
        verdict = sub.tally.add(c, untrusted)
        assert not isinstance(verdict, Duplicate)  # has_reported() ruled that out
        if not isinstance(verdict, Pending):
            return out + self._decide(c.index, verdict)
        return out + self._setback(c.index, verdict.more)

    def _setback(self, index: int, more: int) -> list[Instruction]:
        """No verdict yet: give up after too many lost attempts, or make sure ``more`` replicas are coming."""
        sub = self._subtasks[index]
        if len(sub.lost) >= self.max_attempts:
            holder, reason = list(sub.lost.items())[-1]
            why = reason.replace("_", " ")
            message = f"{len(sub.lost)} nodes took it and never answered; the last, {holder}: {why}"
            return self._decide(index, Failed(reason, message))
        outstanding = sum(slot.state in ("queued", "leased") for slot in sub.slots)
        added = []
        for _ in range(min(more - outstanding, self.replication.max_replicas - len(sub.slots))):
            added.append(ReplicaRef(index, len(sub.slots)))
            sub.slots.append(_Slot())
            bisect.insort(self._queue, added[-1])
        return [ReplicasAdded(tuple(added))] if added else []

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
            lost = self._subtasks[ref.index].lost
            lost.pop(holder, None)  # re-insert: the latest loss is the last entry
            lost[holder] = reason
            out += [ReplicaLost(holder, ref, reason, credible=via is None), *self._setback(ref.index, 0)]
        return out

    def _decide(self, index: int, outcome: Outcome) -> list[Instruction]:
        sub = self._subtasks[index]
        sub.outcome = outcome
        revoked: dict[PeerId, list[ReplicaRef]] = {}
        for r, slot in enumerate(sub.slots):
            ref = ReplicaRef(index, r)
            if slot.state == "queued":
                del self._queue[bisect.bisect_left(self._queue, ref)]
            elif slot.state == "leased" and slot.holder is not None:
                revoked.setdefault(slot.holder, []).append(ref)
                self._leased.discard(ref)
            if slot.state != "reported":
                sub.slots[r] = _Slot("dropped")
        self._count(outcome)
        out: list[Instruction] = [Revoke(p, tuple(refs), "the subtask is decided") for p, refs in revoked.items()]
        out.append(SubtaskDecided(index, outcome))
        if not self.finished and sum(self._counts.values()) == len(self._subtasks):
            self.finished = True
            out.append(JobFinished(self.progress()))
        return out

    def _count(self, outcome: Outcome) -> None:
        ok = isinstance(outcome, Verified) and outcome.ok
        self._counts["disputed" if isinstance(outcome, Disputed) else "verified" if ok else "failed"] += 1

    # --- persistence -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a restarted owner needs, as a plain JSON-compatible dict."""
        r = self.replication
        return {
            "format": _FORMAT, "job_id": self.job_id.hex(), "owner": str(self.owner),
            "replication": [r.replicas, r.quorum, r.max_replicas], "subtask_count": len(self._subtasks),
            "lease_seconds": self.lease_seconds, "max_attempts": self.max_attempts,
            "requests": {str(p): last[0] for p, last in self._requests.items()},
            "subtasks": [_snapshot_subtask(sub) for sub in self._subtasks],
        }  # fmt: skip

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> JobOwner:
        """Rebuild a job from ``snapshot``'s output; leased replicas go back to the deque.

        Raises:
            ValueError: the dict is not a snapshot this version wrote, or is inconsistent.
        """
        try:
            return cls._restore(data)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, WireError) as exc:
            raise ValueError(f"not a usable job snapshot: {exc}") from exc

    @classmethod
    def _restore(cls, d: Mapping[str, Any]) -> JobOwner:
        if d["format"] != _FORMAT:
            raise ValueError(f"unknown format {d['format']!r}")
        policy = Replication(*(int(n) for n in d["replication"]))
        job = cls(
            bytes.fromhex(d["job_id"]), PeerId.from_base58(d["owner"]), policy, int(d["subtask_count"]),
            lease_seconds=float(d["lease_seconds"]), max_attempts=int(d["max_attempts"]),
        )  # fmt: skip
        if len(d["subtasks"]) != len(job._subtasks):
            raise ValueError("subtask count does not match")
        job._requests = {PeerId.from_base58(p): (int(i), ()) for p, i in d["requests"].items()}
        job._queue = []
        for index, s in enumerate(d["subtasks"]):
            claims = [decode(bytes.fromhex(h), ResultClaim) for h in s["claims"]]
            untrusted = None if s.get("untrusted") is None else {PeerId.from_base58(p) for p in s["untrusted"]}
            sub = job._subtasks[index] = _Subtask(Tally.replay(job.job_id, index, policy, claims, untrusted), [])
            sub.slots = [_Slot("reported" if r in s["reported"] else "queued") for r in range(int(s["slots"]))]
            sub.bound = {PeerId.from_base58(p): int(r) for p, r in s["bound"].items()}
            sub.lost = {PeerId.from_base58(p): str(reason) for p, reason in s["lost"]}
            sub.outcome = Failed(*map(str, s["failed"])) if s.get("failed") else sub.tally.final
            if sub.outcome is not None:
                sub.slots = [slot if slot.state == "reported" else _Slot("dropped") for slot in sub.slots]
                job._count(sub.outcome)
            else:
                job._queue.extend(ReplicaRef(index, r) for r, slot in enumerate(sub.slots) if slot.state == "queued")
        job._queue.sort()
        job.finished = sum(job._counts.values()) == len(job._subtasks)
        return job


def _snapshot_subtask(sub: _Subtask) -> dict[str, Any]:
    out: dict[str, Any] = {
        "slots": len(sub.slots),
        "reported": [r for r, slot in enumerate(sub.slots) if slot.state == "reported"],
        "bound": {str(p): r for p, r in sub.bound.items()},
        "lost": [[str(p), reason] for p, reason in sub.lost.items()],  # a list: its order says which was last
        "claims": [encode(c).hex() for c in sub.tally.claims],
    }
    if isinstance(sub.outcome, Failed):
        out["failed"] = [sub.outcome.code, sub.outcome.message]
    elif sub.outcome is not None:
        out["untrusted"] = sorted(str(p) for p in sub.tally.untrusted_at_verdict)
    return out
