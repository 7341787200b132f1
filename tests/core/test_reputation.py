"""Per-peer reputation: counters, score, barring, ranking, and the plain-dict round trip."""

from __future__ import annotations

import json

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.peer_id import PeerId
from meshnode.core.reputation import PeerReputation, Reputation
from meshnode.core.verify import Verified

PEERS = [PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key)) for i in range(6)]
A, B, C, D = PEERS[:4]


def verified(
    agreeing: tuple[PeerId, ...] = (), disagreeing: tuple[PeerId, ...] = (), failed: tuple[PeerId, ...] = ()
) -> Verified:
    return Verified("ok", b"h" * 32, agreeing, agreeing, disagreeing, failed, (), ())


def test_a_stranger_has_a_clean_neutral_record_and_reading_it_creates_nothing() -> None:
    r = Reputation()
    assert r[A] == PeerReputation() and r.score(A) == 0.5
    assert not r.barred_from_quorum(A)
    assert len(r) == 0


def test_verdicts_credit_agreement_and_blame_disagreement_and_failure() -> None:
    r = Reputation()
    r.record_verdict(verified(agreeing=(A, B), disagreeing=(C,), failed=(D,)))
    assert r[A] == PeerReputation(agreements=1)
    assert r[C] == PeerReputation(disagreements=1)
    assert r[D] == PeerReputation(failures=1)
    assert r.score(A) > r.score(D) > r.score(C)


def test_one_disagreement_bars_for_good_but_failures_never_do() -> None:
    r = Reputation()
    for _ in range(5):
        r.record_failure(A)
    r.record_verdict(verified(disagreeing=(B,)))
    for _ in range(100):
        r.record_verdict(verified(agreeing=(B,)))
    assert not r.barred_from_quorum(A)
    assert r.barred_from_quorum(B) and r.barred() == {B}


def test_a_long_clean_record_approaches_one() -> None:
    r = Reputation()
    for _ in range(99):
        r.record_verdict(verified(agreeing=(A,)))
    assert r.score(A) == pytest.approx(100 / 101)


def test_rank_puts_good_peers_first_barred_last_and_is_deterministic() -> None:
    r = Reputation()
    r.record_verdict(verified(agreeing=(A,)))
    r.record_failure(C)
    for _ in range(50):
        r.record_verdict(verified(agreeing=(D,)))
    r.record_verdict(verified(disagreeing=(D,)))  # barred, however good before
    stranger_1, stranger_2 = sorted([B, PEERS[4]], key=PeerId.to_bytes)
    assert r.rank([D, C, PEERS[4], B, A, A]) == [A, stranger_1, stranger_2, C, D]


def test_the_record_round_trips_through_json() -> None:
    r = Reputation()
    r.record_verdict(verified(agreeing=(A,), disagreeing=(B,), failed=(C,)))
    data = json.loads(json.dumps(r.to_dict()))
    again = Reputation.from_dict(data)
    assert again.to_dict() == r.to_dict()
    assert again.barred() == {B}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"format": 2, "peers": {}},
        {"format": 1, "peers": []},
        {"format": 1, "peers": {"not a peer": {"agreements": 0, "disagreements": 0, "failures": 0}}},
        {"format": 1, "peers": {str(A): {"agreements": -1, "disagreements": 0, "failures": 0}}},
        {"format": 1, "peers": {str(A): {"agreements": True, "disagreements": 0, "failures": 0}}},
        {"format": 1, "peers": {str(A): {"agreements": 1, "disagreements": 0}}},
        {"format": 1, "peers": {str(A): 3}},
    ],
)
def test_a_damaged_record_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Reputation.from_dict(data)


events = st.lists(
    st.tuples(st.sampled_from(["agree", "disagree", "fail", "lapse"]), st.sampled_from(PEERS)), max_size=40
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(events)
def test_any_history_round_trips_and_ranks_barred_peers_last(history: list[tuple[str, PeerId]]) -> None:
    r = Reputation()
    for kind, peer in history:
        if kind == "agree":
            r.record_verdict(verified(agreeing=(peer,)))
        elif kind == "disagree":
            r.record_verdict(verified(disagreeing=(peer,)))
        elif kind == "fail":
            r.record_verdict(verified(failed=(peer,)))
        else:
            r.record_failure(peer)
    assert Reputation.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()
    ranked = r.rank(PEERS)
    barred = [r.barred_from_quorum(p) for p in ranked]
    assert barred == sorted(barred)  # every barred peer after every other
    assert all(0 < r.score(p) < 1 for p in PEERS)
