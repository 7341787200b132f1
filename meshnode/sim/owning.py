"""A simulated owner's job: the core's ``JobOwner``, driven as ``node/owning.py`` drives it, and its journal.

Theory of operation:

*Journal first.* ``drive`` feeds events to the job's state machine and carries
out every instruction it returns in one ``match``: grants, acknowledgements and
transfers go back to the caller to send; revocations go to their holders at
once; a lost replica costs its holder reputation; verdicts feed reputation and
the owner's trust book and are committed to the journal, with the credit they
grant, before ``drive`` returns, so before any executor hears its claim was
accepted. An instruction the simulator does not know stops the run.

*Adaptive replication.* The journal also keeps, of each result accepted on one
executor's word, who that was (``lone``), as the real journal's lone results.
When a verdict catches an executor disagreeing with a verified quorum, the
trust book says so and, after the commit, the node distrusts it (``distrust``
on the node): its lone results become suspect, and every running job's are
decided again (``Reopen``); the journal marks them as being rechecked
(``Reopened``), so a restarted owner treats them as undecided, and their new
verdicts replace the old ones, withdrawing the old verdict's credit.

*What survives a crash* is what the real node commits: the ``JobJournal`` (the
standing verdicts, the lone results, and the last snapshot of the window, saved
with a commit at most once a second, as ``SNAPSHOT_EVERY`` says). A restarted
owner is rebuilt with ``JobOwner.restore(snapshot, verdicts)``. A *torn* commit
- the owner dies after its machine reached verdicts but before the journal has
them - loses those verdicts and everything the drive would have sent; the
restored owner reaches them again from the claims its executors push again.

Snapshots cost a walk over the open subtasks and an encoding of their claims,
so they are taken only while a crash of their owner is still to come (the plan
says when): after its last one, nobody ever reads one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from ..core.adaptive import TrustBook
from ..core.credit import grants
from ..core.job import (
    Ack, Cancel, ClaimReceived, Event, Failed, Grant, JobFinished, Renewed, Reopen, Reopened, ReplicaLost,
    ReplicasAdded, Revoke, StealRequest, SubtaskDecided, Transferred,
)  # fmt: skip
from ..core.owner import JobOwner
from ..core.peer_id import PeerId
from ..core.presence import next_seq
from ..core.reputation import Reputation
from ..core.verify import Verified
from .world import World, unknown

__all__ = ["HOLD_RUNS", "SNAPSHOT_EVERY", "Carried", "JobJournal", "OwnedJob", "OwnerNode"]

SNAPSHOT_EVERY: Final = 1.0  # seconds between two snapshots, at most one per commit (node/owning.py)
HOLD_RUNS: Final = 4  # runs' time limits one node may keep one replica for, after a lease (node/owning.py)

LoneState = Literal["accepted", "suspect", "rechecking"]


class OwnerNode(Protocol):
    """What a job needs of the simulated node that owns it."""

    index: int
    epoch: int
    reputation: Reputation
    trust: TrustBook

    def revoke(self, job_id: bytes, revoke: Revoke) -> None: ...

    def work_added(self) -> None: ...

    def barred_changed(self) -> None: ...

    def reputation_changed(self) -> None: ...

    def verdict_recorded(self) -> None:
        """A verdict changed reputations and trust: they are saved within a minute."""
        ...

    def distrust(self, peer: PeerId) -> bool:
        """``peer`` was caught lying: recheck what it alone vouched for; False if the node died doing so."""
        ...

    def tearing(self) -> bool:
        """Whether the node dies in this commit (a torn commit); it is crashed by the call if so."""
        ...


@dataclass(slots=True)
class JobJournal:
    """What the owner's journal holds of one job: it survives crashes."""

    job_id: bytes
    subtasks: int
    adaptive: bool
    snapshot: dict[str, Any]
    statuses: dict[int, str] = field(default_factory=dict)  # the standing verdict of each decided subtask
    lone: dict[int, tuple[PeerId, LoneState]] = field(default_factory=dict)  # results accepted on one word
    finished: bool = False
    cancelled: bool = False

    @property
    def ended(self) -> bool:
        return self.finished or self.cancelled

    def verdicts(self) -> list[tuple[int, str]]:
        """What a restarted owner is given (``Store.verdicts``): a lone result being rechecked is not a verdict."""
        lone = self.lone
        return [(i, s) for i, s in sorted(self.statuses.items()) if i not in lone or lone[i][1] != "rechecking"]

    def suspect(self, peer: PeerId) -> list[int]:
        """``Store.distrust``: every result accepted on ``peer``'s word alone becomes suspect; the suspect ones."""
        found = []
        for index, (executor, state) in self.lone.items():
            if executor == peer and state != "rechecking":
                self.lone[index] = (executor, "suspect")
                found.append(index)
        return sorted(found)


@dataclass(slots=True)
class Carried:
    """What a drive said that answers a request; the driver carried out the rest."""

    grants: list[Grant] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    transferred: list[Transferred] = field(default_factory=list)


class OwnedJob:
    """One job of a simulated owner, while that owner runs (a crash throws it away; the journal stays)."""

    __slots__ = ("journal", "machine", "node", "request_id", "snapshot_at", "world")

    def __init__(self, world: World, node: OwnerNode, journal: JobJournal, machine: JobOwner) -> None:
        self.world, self.node, self.journal, self.machine = world, node, journal, machine
        self.request_id = 0  # the owner's own steal requests (grows across restarts: unix ms)
        self.snapshot_at = world.clock.now

    @property
    def job_id(self) -> bytes:
        return self.journal.job_id

    @classmethod
    def submit(cls, world: World, node: OwnerNode, job_id: bytes, subtasks: int) -> OwnedJob:
        s, me = world.scenario, world.ids[node.index]
        max_hold = s.lease_seconds + HOLD_RUNS * s.task_timeout  # as node/owning.max_hold sets it
        machine = world.verification.owner(job_id, me, subtasks, s.lease_seconds, s.max_attempts, max_hold, node.trust,
                                           world.rng.random)  # fmt: skip
        return cls(world, node, JobJournal(job_id, subtasks, machine.adaptive, machine.snapshot()), machine)

    @classmethod
    def restore(cls, world: World, node: OwnerNode, journal: JobJournal) -> OwnedJob:
        machine = world.verification.restore(journal.snapshot, journal.verdicts(), node.trust, world.rng.random)
        world.checker.restored(journal.job_id, machine)
        world.counters.owner_restores += 1
        return cls(world, node, journal, machine)

    def take(self, n: int) -> Grant | None:
        """Replicas for the owner's own slots, as a steal request from itself (``JobManager.take``)."""
        self.request_id = next_seq(self.request_id, self.world.unix_ms())
        me = self.world.ids[self.node.index]
        carried = self.drive(StealRequest(me, n, self.request_id, self.world.clock.now))
        return carried.grants[0] if carried is not None and carried.grants else None

    def cancel(self) -> bool:
        """Stop the job; False if the owner died in the commit."""
        if self.machine.finished:
            return True
        if self.drive(Cancel(self.world.clock.now)) is None:
            return False
        self.journal.cancelled = True
        self.world.checker.cancelled_job(self.job_id)
        return True

    def drive(self, *events: Event) -> Carried | None:
        """Feed events to the state machine and carry out every instruction it returns.

        Returns:
            What answers the request, or None if the owner died in the commit (nothing may be sent).
        """
        w, node = self.world, self.node
        me = w.ids[node.index]
        carried = Carried()
        decided: list[tuple[SubtaskDecided, frozenset[PeerId]]] = []
        rechecked: list[Reopened] = []
        caught: list[PeerId] = []
        failed: set[PeerId] = set()
        finished = False
        for event in events:
            untrusted = event.untrusted if isinstance(event, ClaimReceived) else frozenset()
            for i in self.machine.handle(event):
                match i:
                    case Grant():
                        carried.grants.append(i)
                    case Ack():
                        carried.acks.append(i)
                    case Transferred():
                        carried.transferred.append(i)
                    case Renewed():
                        pass  # the renewal is answered all the same; what it lost is revoked
                    case Revoke():
                        node.revoke(self.job_id, i)
                    case ReplicaLost():
                        w.counters.lost_replicas += 1
                        if i.credible and i.holder != me:
                            failed.add(i.holder)  # once per holder, as the node does (node/owning.py)
                    case ReplicasAdded():
                        w.counters.added[i.why] += len(i.replicas)
                        node.work_added()
                    case Reopened():
                        rechecked.append(i)
                        node.work_added()
                    case SubtaskDecided():
                        if isinstance(i.outcome, Verified):
                            node.reputation.record_verdict(i.outcome)
                            node.reputation_changed()
                            node.verdict_recorded()
                            if i.outcome.disagreeing:
                                node.barred_changed()
                            caught += node.trust.record_verdict(i.outcome, w.clock.now)
                        decided.append((i, untrusted))
                    case JobFinished():
                        finished = True
                    case _:
                        unknown(i)
        for peer in sorted(failed, key=str):  # in a fixed order: the simulation is deterministic
            node.reputation.record_failure(peer)
            node.reputation_changed()
        if decided or finished or rechecked:
            if node.tearing():
                return None
            self._commit(decided, rechecked, finished, me)
        if self.machine.open_count() > w.counters.max_open:
            w.counters.max_open = self.machine.open_count()
        for peer in caught:
            if not node.distrust(peer):
                return None
        return carried

    def _commit(
        self, decided: list[tuple[SubtaskDecided, frozenset[PeerId]]], rechecked: list[Reopened], finished: bool,
        me: PeerId,
    ) -> None:  # fmt: skip
        """One transaction: lone results reopened, then verdicts and their credit, then the snapshot."""
        w, journal = self.world, self.journal
        for r in rechecked:
            for index in r.indices:
                journal.lone[index] = (r.distrusted, "rechecking")
            w.checker.reopened(self.job_id, r.indices)
            w.counters.reopened += len(r.indices)
        for d, untrusted in decided:
            outcome = d.outcome
            credit = grants(self.job_id, d.index, outcome, me) if isinstance(outcome, Verified) else ()
            w.checker.committed(self.job_id, d.index, outcome, untrusted, me, credit, d.verified_by, d.revised)
            if isinstance(outcome, Verified):
                status = outcome.status
            else:
                status = outcome.code if isinstance(outcome, Failed) else "disputed"
            journal.statuses[d.index] = status
            if journal.adaptive:
                if isinstance(outcome, Verified) and d.verified_by == "single":
                    journal.lone[d.index] = (outcome.counted[0], "accepted")
                else:
                    journal.lone.pop(d.index, None)
        if finished:
            journal.finished = True
            w.job_ended(self.job_id)
        elif (decided or rechecked) and w.clock.now - self.snapshot_at >= SNAPSHOT_EVERY and w.may_crash(self.node.index):
            journal.snapshot = self.machine.snapshot()
            self.snapshot_at = w.clock.now
            w.counters.snapshots += 1
