"""Cross-verification of one subtask: quorum, fuel, duplicates, untrusted executors, disputes."""

from __future__ import annotations

import hashlib

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.manifest import Replication
from meshnode.core.peer_id import PeerId
from meshnode.core.result import ResultClaim
from meshnode.core.verify import Candidate, Disputed, Duplicate, Pending, Tally, Verified, judge

JOB = b"j" * 16
PEERS = [PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key)) for i in range(8)]
A, B, C, D, E = PEERS[:5]
GOOD = hashlib.sha256(b"good").digest()
EVIL = hashlib.sha256(b"evil").digest()


def claim(
    executor: PeerId, status: str = "ok", sha: bytes | None = GOOD, fuel: int = 100, engine: str = "e1", index: int = 0,
    message: str = "",
) -> ResultClaim:
    return ResultClaim(
        job_id=JOB, index=index, replica=0, executor=executor, status=status,
        output_sha256=sha if status == "ok" else None, output_size=4, fuel_used=fuel, engine=engine, message=message,
    )  # fmt: skip


def rep(replicas: int = 2, quorum: int = 2, max_replicas: int = 5) -> Replication:
    return Replication(replicas=replicas, quorum=quorum, max_replicas=max_replicas)


def test_single_replica_quorum_one_is_verified_at_once() -> None:
    v = judge([claim(A)], rep(1, 1, 1))
    assert isinstance(v, Verified) and v.ok
    assert v.output_sha256 == GOOD and v.counted == (A,) and v.fuel == (("e1", 100),)


def test_nothing_reported_needs_a_quorum() -> None:
    assert judge([], rep(2, 3, 5)) == Pending(3)


def test_two_agree_and_the_dissenter_is_named() -> None:
    v = judge([claim(A), claim(B, sha=EVIL), claim(C)], rep())
    assert isinstance(v, Verified)
    assert v.counted == (A, C) and v.agreeing == (A, C) and v.disagreeing == (B,) and v.failed == ()


def test_one_claim_waits_for_one_more() -> None:
    assert judge([claim(A)], rep()) == Pending(1)


def test_disagreement_asks_for_another_replica() -> None:
    assert judge([claim(A), claim(B, sha=EVIL)], rep()) == Pending(1)


def test_quorum_agreeing_on_a_failure_code_is_a_verified_failure() -> None:
    v = judge([claim(A, "trap", fuel=7), claim(B, "trap", fuel=7)], rep())
    assert isinstance(v, Verified) and not v.ok
    assert v.status == "trap" and v.output_sha256 is None and v.counted == (A, B)


def test_a_task_error_is_verified_with_the_message_its_replicas_agree_on() -> None:
    bad_seed = "seed must be an integer"
    v = judge([claim(A, "task_error", fuel=9, message=bad_seed), claim(B, "task_error", fuel=9, message=bad_seed)], rep())
    assert isinstance(v, Verified) and not v.ok
    assert v.status == "task_error" and v.message == bad_seed and v.counted == (A, B) and v.fuel == (("e1", 9),)


def test_a_task_error_message_is_compared_like_an_output() -> None:
    # The message is the task's answer: another message is another answer, and its executor disagrees.
    first = [claim(A, "task_error", message="x must be positive"), claim(B, "task_error", message="x is fine")]
    assert judge(first, rep()) == Pending(1)
    v = judge([*first, claim(C, "task_error", message="x must be positive")], rep())
    assert isinstance(v, Verified) and v.message == "x must be positive"
    assert v.counted == (A, C) and v.disagreeing == (B,) and v.failed == ()
    disputed = judge(first, rep(2, 2, 2))
    assert isinstance(disputed, Disputed)
    assert [c.message for c in disputed.candidates] == ["x must be positive", "x is fine"]


def test_a_task_error_against_a_verified_output_is_a_disagreement_not_a_failure() -> None:
    v = judge([claim(A), claim(B, "task_error", message="bad input"), claim(C, "trap", message="unreachable"), claim(D)], rep())
    assert isinstance(v, Verified) and v.ok and v.message == ""
    assert v.disagreeing == (B,) and v.failed == (C,)


def test_other_failures_agree_whatever_their_messages_say() -> None:
    v = judge([claim(A, "trap", message="wasm trap: unreachable"), claim(B, "trap", message="unreachable")], rep())
    assert isinstance(v, Verified) and v.status == "trap" and v.message == "" and v.counted == (A, B)


def test_different_failure_codes_do_not_agree() -> None:
    assert judge([claim(A, "trap"), claim(B, "memory_limit")], rep()) == Pending(1)


def test_max_replicas_reached_is_disputed_with_every_candidate_and_who_reported_it() -> None:
    claims = [claim(A), claim(B, sha=EVIL), claim(C, "trap")]
    v = judge(claims, rep(2, 2, 3))
    assert v == Disputed(
        (Candidate("ok", GOOD, (A,)), Candidate("ok", EVIL, (B,)), Candidate("trap", None, (C,)))
    )


def test_disputed_as_soon_as_no_key_can_reach_quorum() -> None:
    # quorum 3 of at most 4: after A, B, C all differ, one more executor cannot make any key reach 3
    v = judge([claim(A), claim(B, sha=EVIL), claim(C, "trap")], rep(3, 3, 4))
    assert isinstance(v, Disputed)
    # but two agreeing of three still hope for the fourth
    assert judge([claim(A), claim(B), claim(C, sha=EVIL)], rep(3, 3, 4)) == Pending(1)


def test_fuel_mismatch_on_the_same_engine_is_a_disagreement() -> None:
    tied = [claim(A, fuel=100), claim(B, fuel=101)]
    assert judge(tied, rep()) == Pending(1)  # one of them is wrong; one more on e1 settles it
    v = judge([*tied, claim(C, fuel=100)], rep())
    assert isinstance(v, Verified)
    assert v.counted == (A, C) and v.disagreeing == (B,)


def test_fuel_is_not_compared_across_engines() -> None:
    v = judge([claim(A, fuel=100, engine="e1"), claim(B, fuel=250, engine="e2")], rep())
    assert isinstance(v, Verified) and v.counted == (A, B)
    assert v.fuel == (("e1", 100), ("e2", 250))


def test_a_tied_engine_blames_nobody() -> None:
    claims = [claim(A, fuel=100), claim(B, fuel=101), claim(C, engine="e2", fuel=9), claim(D, engine="e3", fuel=5)]
    v = judge(claims, rep())
    assert isinstance(v, Verified)
    assert v.counted == (C, D) and v.unresolved == (A, B) and v.disagreeing == ()


def test_timeouts_agree_whatever_their_fuel() -> None:
    v = judge([claim(A, "timeout", fuel=10), claim(B, "timeout", fuel=99)], rep())
    assert isinstance(v, Verified) and v.status == "timeout"


def test_a_timeout_where_the_quorum_succeeded_is_a_failure_not_a_lie() -> None:
    v = judge([claim(A), claim(B, "timeout"), claim(C)], rep())
    assert isinstance(v, Verified) and v.failed == (B,) and v.disagreeing == ()


def test_an_output_where_the_quorum_trapped_is_a_lie() -> None:
    v = judge([claim(A, "trap"), claim(B, sha=EVIL), claim(C, "trap")], rep())
    assert isinstance(v, Verified) and v.status == "trap" and v.disagreeing == (B,)


def test_a_verified_timeout_blames_no_one_who_finished() -> None:
    v = judge([claim(A, "timeout"), claim(B), claim(C, "timeout")], rep())
    assert isinstance(v, Verified) and v.status == "timeout"
    assert v.unresolved == (B,) and v.disagreeing == ()


def test_untrusted_executors_never_count_but_are_listed() -> None:
    claims = [claim(A), claim(B)]
    assert judge(claims, rep(), untrusted={B}) == Pending(1)
    v = judge([*claims, claim(C)], rep(), untrusted={B})
    assert isinstance(v, Verified)
    assert v.counted == (A, C) and v.agreeing == (A, B, C)


def test_untrusted_claims_show_in_a_dispute_and_use_up_replicas() -> None:
    v = judge([claim(A), claim(B, sha=EVIL)], rep(2, 2, 2), untrusted={B})
    assert isinstance(v, Disputed) and [c.executors for c in v.candidates] == [(A,), (B,)]


def test_two_untrusted_cannot_make_a_quorum() -> None:
    assert isinstance(judge([claim(A, sha=EVIL), claim(B, sha=EVIL)], rep(2, 2, 2), untrusted={A, B}), Disputed)


def test_judge_refuses_two_claims_from_one_executor() -> None:
    with pytest.raises(ValueError):
        judge([claim(A), claim(A)], rep())


def test_tally_counts_an_executor_once() -> None:
    t = Tally(JOB, 0, rep())
    assert t.add(claim(A)) == Pending(1)
    assert t.add(claim(A, fuel=5)) == Duplicate(A)
    assert t.claims == [claim(A)]
    v = t.add(claim(B))
    assert isinstance(v, Verified) and t.final == v


def test_tally_latches_the_verdict_and_records_nothing_late() -> None:
    t = Tally(JOB, 0, rep(1, 1, 3))
    v = t.add(claim(A))
    assert t.add(claim(B, sha=EVIL)) == v
    assert t.claims == [claim(A)]
    assert not t.has_reported(B)


def test_tally_refuses_claims_for_another_subtask() -> None:
    with pytest.raises(ValueError):
        Tally(JOB, 0, rep()).add(claim(A, index=1))


def test_replay_reproduces_the_verdict_with_the_untrusted_set_it_was_reached_with() -> None:
    t = Tally(JOB, 0, rep())
    for c, bad in [(claim(A, sha=EVIL), set()), (claim(B), {A}), (claim(C, sha=EVIL), {A}), (claim(D), {A})]:
        t.add(c, bad)
    assert isinstance(t.final, Verified) and t.untrusted_at_verdict == {A}
    again = Tally.replay(JOB, 0, rep(), t.claims, t.untrusted_at_verdict)
    assert again.final == t.final and again.claims == t.claims
    assert Tally.replay(JOB, 0, rep(), t.claims[:1], None).final is None
    with pytest.raises(ValueError):
        Tally.replay(JOB, 0, rep(), t.claims[:1], frozenset())  # one claim cannot have been verified


# --- properties -------------------------------------------------------------------------------

claims_st = st.lists(
    st.builds(
        claim,
        executor=st.sampled_from(PEERS),
        status=st.sampled_from(["ok", "ok", "trap", "timeout", "task_error"]),
        sha=st.sampled_from([GOOD, EVIL]),
        fuel=st.sampled_from([100, 101]),
        engine=st.sampled_from(["e1", "e2"]),
        message=st.sampled_from(["", "bad x"]),
    ),
    max_size=8,
    unique_by=lambda c: c.executor,
)
policies = st.integers(1, 4).flatmap(
    lambda q: st.integers(q, 6).map(lambda m: Replication(replicas=q, quorum=q, max_replicas=m))
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(claims_st, policies, st.sets(st.sampled_from(PEERS), max_size=3))
def test_verdicts_follow_the_rules(claims: list[ResultClaim], policy: Replication, untrusted: set[PeerId]) -> None:
    v = judge(claims, policy, untrusted)
    if isinstance(v, Verified):
        assert len(set(v.counted)) == len(v.counted) >= policy.quorum
        assert not set(v.counted) & untrusted
        by_peer = {c.executor: c for c in claims}
        assert all(by_peer[p].agreement_key() == (v.status, v.output_sha256, v.message) for p in v.agreeing)
        assert v.message == "" or v.status == "task_error"
        assert set(v.counted) <= set(v.agreeing)
        groups = [set(v.agreeing), set(v.disagreeing), set(v.failed), set(v.unresolved)]
        assert sum(map(len, groups)) == len(claims) and set().union(*groups) == set(by_peer)
        for p in v.counted:  # fuel agrees among counted executors of one engine
            c = by_peer[p]
            assert c.status == "timeout" or (c.engine, c.fuel_used) in v.fuel
    elif isinstance(v, Disputed):
        assert v.candidates and sum(len(c.executors) for c in v.candidates) == len(claims)
        assert len({(c.status, c.output_sha256, c.message) for c in v.candidates}) == len(v.candidates)
    else:
        assert 1 <= v.more <= policy.quorum
        assert v.more <= policy.max_replicas - len(claims)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(claims_st, policies)
def test_tally_decides_as_judge_does_on_every_prefix(claims: list[ResultClaim], policy: Replication) -> None:
    t = Tally(JOB, 0, policy)
    for i, c in enumerate(claims):
        before = t.final
        v = t.add(c)
        if before is not None:
            assert v == before
        else:
            assert v == judge(claims[: i + 1], policy)
