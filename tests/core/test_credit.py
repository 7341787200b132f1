"""Credit: what a verdict earns, one receipt per job and executor, and checking a receipt's signature."""

from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import wire
from meshnode.core.credit import (
    FUEL_PER_CREDIT, CreditAsk, CreditReceipt, CreditReply, Grant, batch, credit_of, grants, indices_hash, open_receipt,
)  # fmt: skip
from meshnode.core.peer_id import PeerId
from meshnode.core.verify import Verified
from meshnode.errors import WireError

KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(5)]
PEERS = [PeerId.from_public_key(bytes(k.verify_key)) for k in KEYS]
OWNER, A, B, C, D = PEERS
JOBS = [bytes([j]) * 16 for j in range(3)]


def verified(status: str = "ok", agreeing: tuple[PeerId, ...] = (A, B), fuel: tuple[tuple[str, int], ...] = (("e1", 500),)) -> Verified:
    return Verified(status=status, output_sha256=b"h" * 32 if status == "ok" else None, counted=agreeing,
                    agreeing=agreeing, disagreeing=(C,), failed=(D,), unresolved=(), fuel=fuel)  # fmt: skip


def test_a_verified_output_earns_every_agreeing_executor_the_agreed_fuel() -> None:
    assert grants(JOBS[0], 3, verified(), OWNER) == (Grant(JOBS[0], 3, A, 500), Grant(JOBS[0], 3, B, 500))


def test_the_owner_grants_itself_nothing() -> None:
    assert [g.executor for g in grants(JOBS[0], 0, verified(agreeing=(OWNER, A)), OWNER)] == [A]


@pytest.mark.parametrize("status", ["task_error", "trap", "fuel_exhausted", "timeout"])
def test_an_agreed_failure_earns_nothing(status: str) -> None:
    assert grants(JOBS[0], 0, verified(status, fuel=(("e1", 500),)), OWNER) == ()


def test_executors_on_two_engines_each_earn_the_larger_count() -> None:
    assert {g.fuel for g in grants(JOBS[0], 0, verified(fuel=(("e1", 400), ("e2", 700))), OWNER)} == {700}


def test_credit_is_fuel_over_the_unit() -> None:
    assert credit_of(3 * FUEL_PER_CREDIT) == 3.0


grant_lists = st.lists(
    st.tuples(st.sampled_from(JOBS), st.integers(0, 50), st.integers(0, 10**12)), max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(grant_lists, st.integers(0, 1000), st.integers(0, 2**40))
def test_a_batch_is_one_receipt_per_job_covering_every_grant_once(
    raw: list[tuple[bytes, int, int]], last_seq: int, now_ms: int
) -> None:
    unreceipted = [Grant(j, i, A, f) for j, i, f in raw]
    drafts = batch(OWNER, A, unreceipted, last_seq, now_ms)
    assert [d.receipt.seq for d in drafts] == list(range(last_seq + 1, last_seq + 1 + len(drafts)))
    assert len({d.receipt.job_id for d in drafts}) == len(drafts) == len({j for j, _, _ in raw})
    covered = sorted((d.receipt.job_id, i) for d in drafts for i in d.indices)
    assert covered == sorted((j, i) for j, i, _ in raw)
    assert sum(d.receipt.fuel for d in drafts) == sum(f for _, _, f in raw)
    for d in drafts:
        r = d.receipt
        assert r.results == len(d.indices) and r.indices_sha256 == indices_hash(d.indices) and r.issued_ms == now_ms
        assert (r.owner, r.executor) == (OWNER, A)
        assert open_receipt(wire.sign(r, KEYS[0]), OWNER, A) == r


def test_a_batch_refuses_a_grant_to_someone_else_or_a_subtask_twice() -> None:
    with pytest.raises(ValueError):
        batch(OWNER, A, [Grant(JOBS[0], 0, B, 1)], 0, 0)
    with pytest.raises(ValueError):
        batch(OWNER, A, [Grant(JOBS[0], 0, A, 1), Grant(JOBS[0], 0, A, 2)], 0, 0)


def receipt(fuel: int = 2 * FUEL_PER_CREDIT) -> CreditReceipt:
    return CreditReceipt(owner=OWNER, executor=A, job_id=JOBS[0], seq=1, results=2, fuel=fuel,
                         indices_sha256=indices_hash([0, 1]), issued_ms=1_700_000_000_000)  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_a_receipt_with_any_byte_flipped_does_not_verify(data: st.DataObject) -> None:
    signed = wire.sign(receipt(), KEYS[0])
    at = data.draw(st.integers(0, len(signed) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(signed)
    tampered[at] ^= 1 << bit
    with pytest.raises(WireError):
        open_receipt(bytes(tampered))


def test_a_receipt_verifies_only_as_its_owners_for_its_executor() -> None:
    signed = wire.sign(receipt(), KEYS[0])
    assert open_receipt(signed).credit == 2.0
    with pytest.raises(WireError):
        open_receipt(signed, owner=B)
    with pytest.raises(WireError):
        open_receipt(signed, executor=B)
    forged = wire.sign(receipt(), KEYS[2])  # B signs a receipt naming OWNER
    with pytest.raises(WireError, match="bad signature"):
        open_receipt(forged)


def test_a_full_reply_fits_its_cap() -> None:
    one = wire.sign(receipt(fuel=2**62), KEYS[0])
    reply = CreditReply(receipts=(one,) * 64)
    assert wire.decode(wire.encode(reply), CreditReply) == reply
    assert wire.decode(wire.encode(CreditAsk(after=7)), CreditAsk).after == 7
