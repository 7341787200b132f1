"""The thief's state machine (thief.py): stock, chunks, pushes, revocations, renewals, stealing from thieves.

Example tests pin each rule; ``ThiefMachine`` drives random interleavings of
grants, revocations, chunks, acknowledgements, refusals, transfers, owners
leaving and clock jumps, then drains the thief and checks that every replica it
took was reported, dropped, returned or handed on, exactly once.
"""

from __future__ import annotations

import hashlib

import nacl.signing
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshnode.core.job import ReplicaRef
from meshnode.core.manifest import Subtask
from meshnode.core.peer_id import PeerId
from meshnode.core.steal import PeerView
from meshnode.core.thief import (
    ANSWER_TRUSTED, HELD_BACK_MAX, HELD_BACK_WAIT, MAX_STEAL, PASSING_BACKOFF, Acknowledged, AskTransfer, ChunkDone,
    ChunkFailed, DropResults, Granted,
    HandOver, Instruction, LookForWork, OwnerLeft, PresenceHeard, PushResults, Ready, Refused, RenewLeases, RestealAsked, Revoked, RunChunk,
    StealAnswered, StealFailed, StealFrom, TakeChunk, TellOwner, Thief, Tick, TransferAnswered,
)  # fmt: skip

IDS = [PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key)) for i in range(5)]
ME, O1, O2, STARVING, OTHER = IDS
J1, J2 = b"1" * 16, b"2" * 16
OWNERS = {J1: O1, J2: O2}
LEASE = 30.0


def R(index: int, replica: int) -> ReplicaRef:
    return ReplicaRef(index, replica)


def sub(job: bytes, index: int, replica: int = 0) -> Subtask:
    return Subtask(job_id=job, index=index, replica=replica, input_sha256=hashlib.sha256(b"%d" % index).digest(),
                   input_size=1, input=b"%d" % index, proof=())  # fmt: skip


def grant(job: bytes, *refs: tuple[int, int], now: float = 0.0, ready: bool = True) -> Granted:
    subtasks = tuple(sub(job, i, r) for i, r in refs)
    return Granted(OWNERS[job], OWNERS[job], job, b"envelope " + job, LEASE, subtasks, now, ready)


def view(peer: PeerId, surplus: int) -> PeerView:
    return PeerView(peer, surplus, 1.0, 0, "e")


def look(*victims: PeerView, now: float = 0.0, own_work: bool = False, accepting: bool = True) -> LookForWork:
    return LookForWork(tuple(victims), own_work, accepting, "e", now, 1_000_000 + int(now * 1000))


def chunk_of(out: list[Instruction]) -> RunChunk:
    (run,) = out
    assert isinstance(run, RunChunk)
    return run


# --- examples ---------------------------------------------------------------------------------


def test_a_granted_subtask_runs_is_pushed_and_forgotten_once_acknowledged() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 1), (1, 1)))
    run = chunk_of(t.handle(TakeChunk(1.0)))
    assert run.job_id == J1 and run.envelope == b"envelope " + J1 and [s.index for s in run.subtasks] == [0]
    assert t.handle(ChunkDone(J1, (R(0, 1),), 0.01, 1.1)) == [PushResults(O1, J1, (R(0, 1),))]
    assert t.held() == {J1: [R(0, 1), R(1, 1)]}
    t.handle(Acknowledged(J1, (R(0, 1),)))
    assert t.held() == {J1: [R(1, 1)]}


def test_a_revoked_replica_is_never_started_and_a_running_one_is_never_pushed() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, *[(i, 0) for i in range(6)]))
    first = chunk_of(t.handle(TakeChunk(0.0)))  # one at first: nothing measured yet
    t.handle(ChunkDone(J1, (R(0, 0),), 0.0001, 0.1))  # fast: chunks grow, up to half of what is left per slot
    run = chunk_of(t.handle(TakeChunk(0.1)))
    assert [s.index for s in first.subtasks] == [0] and [s.index for s in run.subtasks] == [1, 2]
    assert t.handle(Revoked(O1, J1, (R(2, 0), R(3, 0)), "the subtask is decided")) == []
    assert t.handle(ChunkDone(J1, (R(1, 0), R(2, 0)), 0.0002, 1.0)) == [
        PushResults(O1, J1, (R(1, 0),)), DropResults(J1, (R(2, 0),))
    ]
    assert [s.index for s in chunk_of(t.handle(TakeChunk(1.0))).subtasks] == [4]  # 3 is never started
    # a revocation of a reported replica drops its result too
    assert t.handle(Revoked(O1, J1, (R(0, 0),), "the job was cancelled")) == [DropResults(J1, (R(0, 0),))]


def test_what_a_chunks_time_budget_did_not_reach_is_handed_back_to_its_owner() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, *[(i, 0) for i in range(8)]))
    t.handle(ChunkDone(J1, (R(0, 0),), 0.0001, 0.1, chunk_of(t.handle(TakeChunk(0.0))).subtasks[1:]))
    run = chunk_of(t.handle(TakeChunk(0.1)))
    assert [s.index for s in run.subtasks] == [1, 2, 3]
    assert t.handle(Revoked(O1, J1, (R(2, 0),), "the subtask is decided")) == []
    # the budget ran out after subtask 1: 2 was revoked meanwhile (forgotten), 3 goes back to the owner
    assert t.handle(ChunkDone(J1, (R(1, 0),), 0.2, 0.3, run.subtasks[1:])) == [
        PushResults(O1, J1, (R(1, 0),)), TellOwner(O1, J1, (R(3, 0),), "")
    ]
    assert t.held() == {J1: [R(i, 0) for i in (0, 1, 4, 5, 6, 7)]}
    assert [s.index for s in chunk_of(t.handle(TakeChunk(0.3))).subtasks][0] == 4


def test_a_revocation_from_anyone_but_the_owner_is_ignored() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0)))
    assert t.handle(Revoked(O2, J1, (R(0, 0),), "forged")) == [] and t.queued() == 1


def test_a_second_replica_of_a_subtask_already_held_is_not_taken() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0)))
    t.handle(grant(J1, (0, 1), (1, 1)))
    assert t.held() == {J1: [R(0, 0), R(1, 1)]}


def test_leases_are_renewed_every_third_of_the_lease_for_everything_held() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0), (1, 0)))
    t.handle(grant(J2, (5, 1), now=4.0))
    assert t.handle(Tick(LEASE / 3 - 1)) == []
    assert t.handle(Tick(LEASE / 3)) == [RenewLeases(O1, J1, (R(0, 0), R(1, 0)))]
    assert t.handle(Tick(LEASE / 3 + 4.0)) == [RenewLeases(O2, J2, (R(5, 1),))]
    assert t.next_renewal() == pytest.approx(2 * LEASE / 3)


def test_an_owner_that_leaves_takes_its_work_with_it() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0), (1, 0)))
    t.handle(grant(J2, (0, 0)))
    run = chunk_of(t.handle(TakeChunk(0.0)))
    t.handle(OwnerLeft(O1))
    assert t.held() == {J2: [R(0, 0)]}
    assert t.handle(ChunkDone(run.job_id, (R(0, 0),), 0.01, 1.0)) == [DropResults(J1, (R(0, 0),))]


def test_refused_work_is_dropped_the_owner_told_why_and_left_alone() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0), (1, 0)))
    assert t.handle(Refused(O1, J1, (R(0, 0), R(1, 0)), "untrusted owner", 5.0)) == [
        TellOwner(O1, J1, (R(0, 0), R(1, 0)), "untrusted owner")
    ]
    assert t.held() == {}
    assert t.handle(look(view(O1, 10), now=6.0)) == []
    assert t.handle(look(view(O1, 10), now=5.0 + PASSING_BACKOFF)) == []
    assert isinstance(t.handle(look(view(O1, 10), now=66.0))[0], StealFrom)


def test_work_given_back_for_a_reason_that_may_pass_leaves_the_owner_alone_only_briefly() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0)))
    reason = "cannot fetch the module: no peer delivered it"
    assert t.handle(Refused(O1, J1, (R(0, 0),), reason, 5.0, passing=True)) == [TellOwner(O1, J1, (R(0, 0),), reason)]
    assert t.held() == {}
    assert t.handle(look(view(O1, 10), now=5.0 + PASSING_BACKOFF - 0.01)) == []
    assert isinstance(t.handle(look(view(O1, 10), now=5.0 + PASSING_BACKOFF))[0], StealFrom)


def test_steals_only_without_own_work_with_a_journal_that_takes_writes_and_below_half_the_stock() -> None:
    t = Thief(ME, slots=2)
    assert t.handle(look(view(O1, 10), own_work=True)) == []
    assert t.handle(look(view(O1, 10), accepting=False)) == []
    (steal,) = t.handle(look(view(O1, 10), view(O2, 3)))
    assert isinstance(steal, StealFrom) and steal.victim == O1 and 1 <= steal.n <= MAX_STEAL and steal.queued == 0
    t.handle(grant(J1, *[(i, 0) for i in range(t.stock())]))
    assert t.handle(look(view(O1, 10), now=1.0)) == []  # a full stock


def test_a_victim_is_believed_about_what_it_has_left_until_its_next_presence() -> None:
    t = Thief(ME, slots=1)
    t.handle(StealAnswered(O1, surplus=0, refused=False, granted=0, now=0.0))
    assert t.handle(look(view(O1, 10))) == []
    t.handle(PresenceHeard(O1))
    assert isinstance(t.handle(look(view(O1, 10)))[0], StealFrom)
    t.handle(StealFailed(O1, 1.0))
    assert t.handle(look(view(O1, 10), now=1.5)) == []
    assert isinstance(t.handle(look(view(O1, 10), now=2.0))[0], StealFrom)



def test_a_victim_that_said_nothing_is_left_is_asked_again_after_a_while_even_if_no_presence_comes() -> None:
    t = Thief(ME, slots=1)
    t.handle(StealAnswered(O1, surplus=0, refused=False, granted=0, now=10.0))
    assert t.handle(look(view(O1, 10), now=10.0 + ANSWER_TRUSTED - 0.01)) == []  # its presence may be lost
    assert isinstance(t.handle(look(view(O1, 10), now=10.0 + ANSWER_TRUSTED))[0], StealFrom)
    assert t.handle(look(view(O1, 0), now=10.0 + ANSWER_TRUSTED)) == []  # and only if its last presence offered work


def test_an_owner_that_holds_the_thief_back_is_asked_again_soon_and_less_often_while_it_does() -> None:
    """Nothing granted but work left: the owner waits for others to catch up (owner.MAX_AHEAD), which passes."""
    t = Thief(ME, slots=1)
    now, waits = 0.0, []
    for _ in range(8):
        t.handle(StealAnswered(O1, surplus=500, refused=False, granted=0, now=now))
        end = t.backoff_end(O1)
        assert t.next_backoff_end(now) == end > now
        assert t.handle(look(view(O1, 500), now=end - 0.001)) == []
        assert isinstance(t.handle(look(view(O1, 500), now=end))[0], StealFrom)
        waits.append(round(end - now, 3))
        now = end
    assert waits == [HELD_BACK_WAIT * 2**k for k in range(6)] + [HELD_BACK_MAX] * 2  # 0.05 s doubling, up to 2 s
    t.handle(StealAnswered(O1, surplus=400, refused=False, granted=5, now=now))  # it granted: back to the start
    assert t.next_backoff_end(now) is None
    t.handle(StealAnswered(O1, surplus=400, refused=False, granted=0, now=now))
    assert t.backoff_end(O1) == now + HELD_BACK_WAIT


def test_a_steal_whose_answer_never_came_is_asked_again_under_its_id_and_an_answered_one_is_not() -> None:
    t = Thief(ME, slots=1)
    (first,) = t.handle(look(view(O1, 10), now=0.0))
    t.handle(StealFailed(O1, 0.5))
    (again,) = t.handle(look(view(O1, 10), now=2.0))
    assert isinstance(first, StealFrom) and isinstance(again, StealFrom)
    assert again.victim == O1 and again.request_id == first.request_id  # the owner answers it with that grant
    t.handle(StealAnswered(O1, surplus=10, refused=False, granted=0, now=2.5))
    (then,) = t.handle(look(view(O1, 10), now=3.0))
    assert isinstance(then, StealFrom) and then.request_id > first.request_id
    t.handle(StealFailed(O1, 3.5, malformed=True))  # an answer, though unusable: not asked again
    (last,) = t.handle(look(view(O1, 10), now=70.0))
    assert isinstance(last, StealFrom) and last.request_id > then.request_id


def test_a_starving_thief_gets_the_cold_end_through_the_owner_and_the_owner_what_it_may_run() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0), (1, 0), (2, 0), (3, 0)))
    assert t.handle(RestealAsked(STARVING, 5, queued=1)) == []  # only a thief with nothing queued is served
    (ask,) = t.handle(RestealAsked(STARVING, 5, queued=0))  # 3 beyond one per slot; half, rounded up
    assert ask == AskTransfer(O1, J1, STARVING, (R(3, 0), R(2, 0)))
    (hand,) = t.handle(TransferAnswered(J1, STARVING, ask.replicas, (R(3, 0),), 30_000))
    assert isinstance(hand, HandOver) and [s.index for s in hand.subtasks] == [3] and hand.lease_ms == 30_000
    assert t.held() == {J1: [R(0, 0), R(1, 0), R(2, 0)]}  # the one not moved is back
    # the owner itself, idle, is asked to take them back: it takes those it may run, the rest stay here
    t.handle(grant(J1, (4, 0), (5, 0)))
    (back,) = t.handle(RestealAsked(O1, 5, queued=0))
    assert back == AskTransfer(O1, J1, O1, (R(5, 0), R(4, 0)))
    assert t.handle(TransferAnswered(J1, O1, back.replicas, (R(5, 0),), 30_000)) == []  # nothing to hand over
    assert t.held() == {J1: [R(0, 0), R(1, 0), R(2, 0), R(4, 0)]}


def test_replicas_whose_module_is_still_coming_are_held_and_renewed_but_not_run() -> None:
    t = Thief(ME, slots=1)
    t.handle(grant(J1, (0, 0), ready=False))
    assert t.handle(TakeChunk(0.0)) == [] and t.held() == {J1: [R(0, 0)]}
    assert t.handle(Tick(LEASE / 3)) == [RenewLeases(O1, J1, (R(0, 0),))]
    t.handle(Ready(J1))
    assert [s.index for s in chunk_of(t.handle(TakeChunk(LEASE / 3))).subtasks] == [0]


def test_unknown_events_are_refused() -> None:
    with pytest.raises(TypeError):
        Thief(ME, 1).handle(object())  # type: ignore[arg-type]


# --- the state machine ------------------------------------------------------------------------


class ThiefMachine(RuleBasedStateMachine):
    """Random interleavings against one thief; every replica it accepts must end exactly one way."""

    @initialize(slots=st.integers(1, 3))
    def start(self, slots: int) -> None:
        self.t = Thief(ME, slots)
        self.now = 0.0
        self.accepted: set[tuple[bytes, ReplicaRef]] = set()
        self.ended: dict[tuple[bytes, ReplicaRef], str] = {}  # how each accepted replica ended
        self.revoked: set[tuple[bytes, ReplicaRef]] = set()  # revocations heard
        self.running: dict[tuple[bytes, ReplicaRef], int] = {}
        self.chunks: dict[int, tuple[bytes, tuple[ReplicaRef, ...]]] = {}
        self.chunk_subtasks: dict[int, tuple[Subtask, ...]] = {}
        self.next_chunk = 0
        self.pushed: set[tuple[bytes, ReplicaRef]] = set()  # pushed, not yet acknowledged
        self.transfers: dict[bytes, AskTransfer] = {}

    def end(self, job: bytes, ref: ReplicaRef, how: str) -> None:
        key = (job, ref)
        assert key in self.accepted and key not in self.ended, f"{how}: {key} ended twice or was never taken"
        self.ended[key] = how

    def apply(self, event: object) -> list[Instruction]:
        before = {(j, r) for j, refs in self.t.held().items() for r in refs}
        out = self.t.handle(event)  # type: ignore[arg-type]
        for i in out:
            match i:
                case RunChunk():
                    refs = tuple(ReplicaRef(s.index, s.replica) for s in i.subtasks)
                    for ref in refs:
                        assert (i.job_id, ref) not in self.revoked, "started a revoked replica"
                        self.running[(i.job_id, ref)] = self.next_chunk
                    self.chunks[self.next_chunk] = (i.job_id, refs)
                    self.chunk_subtasks[self.next_chunk] = i.subtasks
                    self.next_chunk += 1
                case PushResults():
                    assert i.owner == OWNERS[i.job_id]
                    for ref in i.replicas:
                        assert (i.job_id, ref) not in self.revoked, "pushed a revoked replica's result"
                        self.pushed.add((i.job_id, ref))
                case DropResults():
                    for ref in i.replicas:
                        self.pushed.discard((i.job_id, ref))
                        if self.ended.get((i.job_id, ref)) != "owner left":  # its chunk ended after the owner left
                            self.end(i.job_id, ref, "dropped")
                case TellOwner():
                    for ref in i.replicas:
                        if (i.job_id, ref) in self.accepted and (i.job_id, ref) not in self.ended:
                            self.end(i.job_id, ref, "told")
                case AskTransfer():
                    assert i.job_id not in self.transfers
                    self.transfers[i.job_id] = i
                case HandOver():
                    for s in i.subtasks:
                        self.end(i.job_id, ReplicaRef(s.index, s.replica), "handed over")
                case RenewLeases():
                    assert list(i.replicas) == self.t.held().get(i.job_id, []), "renewed other than what it holds"
                    assert not {(i.job_id, r) for r in i.replicas} & self.revoked, "renewed a revoked replica"
                case StealFrom():
                    pass
        after = {(j, r) for j, refs in self.t.held().items() for r in refs}
        if isinstance(event, Granted):
            self.accepted |= after - before
        return out

    # --- rules -------------------------------------------------------------------------

    @rule(job=st.sampled_from([J1, J2]), refs=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2)), max_size=6),
          ready=st.booleans())
    def granted(self, job: bytes, refs: list[tuple[int, int]], ready: bool) -> None:
        fresh = [r for r in refs if (job, R(*r)) not in self.accepted]  # an owner never grants a replica twice
        self.apply(grant(job, *fresh, now=self.now, ready=ready))

    @rule(job=st.sampled_from([J1, J2]))
    def module_arrives(self, job: bytes) -> None:
        self.apply(Ready(job))

    @rule(data=st.data(), job=st.sampled_from([J1, J2]), reason=st.sampled_from(["decided", "cancelled", "lease lost"]))
    def revoked_by_owner(self, data: st.DataObject, job: bytes, reason: str) -> None:
        known = sorted(r for j, r in self.accepted if j == job)
        if known:
            refs = data.draw(st.lists(st.sampled_from(known), min_size=1, unique=True))
            held = set(self.t.held().get(job, []))
            asked = set(self.transfers[job].replicas) if job in self.transfers else set()  # out of the queue, for now
            pushed = set(self.pushed)
            self.apply(Revoked(OWNERS[job], job, tuple(refs), reason))
            for ref in refs:
                key = (job, ref)
                self.revoked.add(key)
                if key in self.ended or key in self.running or key in pushed:
                    continue  # running: dropped when its chunk ends; pushed: dropped now
                if ref in held or ref in asked:
                    self.end(job, ref, "revoked while queued")

    @rule()
    def take_chunk(self) -> None:
        self.apply(TakeChunk(self.now))

    @rule(data=st.data(), failed=st.booleans())
    def chunk_ends(self, data: st.DataObject, failed: bool) -> None:
        if self.chunks:
            number = data.draw(st.sampled_from(sorted(self.chunks)))
            job, refs = self.chunks.pop(number)
            subtasks = self.chunk_subtasks.pop(number)
            live = [r for r in refs if (job, r) not in self.ended]
            for ref in refs:
                self.running.pop((job, ref), None)
            if failed:
                self.apply(ChunkFailed(job, refs))
                for ref in live:
                    if (job, ref) not in self.ended:
                        self.end(job, ref, "failed")
            else:  # the chunk's time budget may have run out before its last subtasks
                cut = data.draw(st.integers(0, len(refs)))
                self.apply(ChunkDone(job, refs[:cut], 0.001 * max(1, cut), self.now, subtasks[cut:]))
                for ref in refs[cut:]:  # never started; revoked meanwhile: forgotten (the others were told)
                    if (job, ref) in self.revoked and (job, ref) in self.accepted and (job, ref) not in self.ended:
                        self.end(job, ref, "revoked, never run")

    @rule(data=st.data())
    def acknowledged(self, data: st.DataObject) -> None:
        if self.pushed:
            job, ref = data.draw(st.sampled_from(sorted(self.pushed)))
            self.pushed.discard((job, ref))
            self.apply(Acknowledged(job, (ref,)))
            self.end(job, ref, "reported")

    @rule(data=st.data(), job=st.sampled_from([J1, J2]), passing=st.booleans())
    def refused_here(self, data: st.DataObject, job: bytes, passing: bool) -> None:
        queued = [r for r in self.t.held().get(job, []) if (job, r) not in self.running and (job, r) not in self.pushed]
        if queued:
            refs = data.draw(st.lists(st.sampled_from(queued), min_size=1, unique=True))
            self.apply(Refused(OWNERS[job], job, tuple(refs), "its proof does not match", self.now, passing))

    @rule(n=st.integers(1, 6), queued=st.integers(0, 1), by_owner=st.booleans())
    def starving_thief_asks(self, n: int, queued: int, by_owner: bool) -> None:
        self.apply(RestealAsked(O1 if by_owner else STARVING, n, queued))

    @rule(data=st.data())
    def owner_answers_transfer(self, data: st.DataObject) -> None:
        if self.transfers:
            job = data.draw(st.sampled_from(sorted(self.transfers)))
            ask = self.transfers.pop(job)
            moved = data.draw(st.lists(st.sampled_from(ask.replicas), unique=True)) if ask.replicas else []
            out = self.apply(TransferAnswered(job, ask.to, ask.replicas, tuple(moved), 30_000))
            if ask.to == OWNERS[job]:  # the owner took them back for its own slots: nothing is handed over
                assert out == []
                for ref in moved:
                    if (job, ref) not in self.ended:  # not revoked while the owner was asked
                        self.end(job, ref, "taken back")

    @rule(owner=st.sampled_from([O1, O2]))
    def owner_leaves(self, owner: PeerId) -> None:
        job = J1 if owner == O1 else J2
        self.apply(OwnerLeft(owner))
        self.transfers.pop(job, None)
        for key in sorted(self.accepted):
            if key[0] == job and key not in self.ended:
                self.end(*key, "owner left")
        self.pushed = {k for k in self.pushed if k[0] != job}

    @rule(dt=st.sampled_from([0.5, 5.0, LEASE / 3, LEASE]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.apply(Tick(self.now))

    @rule(surplus=st.integers(0, 50), own_work=st.booleans())
    def look_for_work(self, surplus: int, own_work: bool) -> None:
        out = self.apply(look(view(O1, surplus), view(O2, surplus // 2), now=self.now, own_work=own_work))
        if own_work or surplus == 0:
            assert out == []

    # --- invariants and the end --------------------------------------------------------

    @invariant()
    def one_replica_per_subtask_and_nothing_revoked_held(self) -> None:
        for job, refs in self.t.held().items():
            assert len({r.index for r in refs}) == len(refs), "two replicas of one subtask"
            assert not {(job, r) for r in refs} & self.revoked, "holds a revoked replica"
        assert self.t.surplus() == max(0, self.t.queued() - self.t.slots)

    def teardown(self) -> None:
        if not hasattr(self, "t"):
            return
        for job, ask in list(self.transfers.items()):  # the owners answer: nothing moved
            self.transfers.pop(job)
            self.apply(TransferAnswered(job, ask.to, ask.replicas, (), 30_000))
        for number in sorted(self.chunks):
            job, refs = self.chunks.pop(number)
            self.chunk_subtasks.pop(number)
            self.apply(ChunkDone(job, refs, 0.001, self.now))
        for job in (J1, J2):
            self.apply(Ready(job))
        while self.t.queued():
            run = chunk_of(self.apply(TakeChunk(self.now)))
            self.chunks.pop(self.next_chunk - 1)
            self.chunk_subtasks.pop(self.next_chunk - 1)
            self.apply(ChunkDone(run.job_id, tuple(ReplicaRef(s.index, s.replica) for s in run.subtasks), 0.001, self.now))
        for job, ref in sorted(self.pushed):
            self.apply(Acknowledged(job, (ref,)))
            self.end(job, ref, "reported")
        assert self.t.held() == {}, self.t.held()
        assert set(self.ended) == self.accepted, "a replica the thief took was never reported, returned or dropped"


TestThiefMachine = ThiefMachine.TestCase
TestThiefMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None, derandomize=True)
