"""The wire format: round-trips, strictness, and signatures."""

from __future__ import annotations

import cbor2
import nacl.signing
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshnode.core import wire
from meshnode.core.output_codec import PLAIN
from meshnode.core.job_messages import PushedResult, ResultPush
from meshnode.core.manifest import JobManifest, Subtask
from meshnode.core.outcome import MESSAGE_MAX
from meshnode.core.peer_id import PeerId
from meshnode.errors import WireError

from meshnode.core.result import ResultClaim

from .strategies import manifests, messages, peer_ids, result_claims, signing_keys, subtasks


@given(messages)
def test_every_message_round_trips(msg: object) -> None:
    data = wire.encode(msg)
    assert wire.decode(data) == msg
    assert wire.decode(data, type(msg)) == msg
    assert wire.encode(wire.decode(data)) == data  # one message, one encoding


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_a_message_or_wire_error(data: bytes) -> None:
    try:
        msg = wire.decode(data)
    except WireError:
        return
    assert wire.encode(msg) == data


@given(messages, st.data())
def test_mutated_encodings_give_the_same_message_another_valid_one_or_wire_error(msg: object, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = wire.decode(bytes(raw))
    except WireError:
        return
    assert wire.encode(decoded) == bytes(raw)


@given(signing_keys, manifests(), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_single_bit_flip_of_a_signed_message_fails_verification(
    key: nacl.signing.SigningKey, manifest: JobManifest, data: st.DataObject
) -> None:
    signer = PeerId.from_public_key(bytes(key.verify_key))
    envelope = wire.sign(manifest, key)
    assert wire.open_signed(envelope, signer, JobManifest) == manifest
    bit = data.draw(st.integers(0, len(envelope) * 8 - 1))
    flipped = bytearray(envelope)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(WireError):
        wire.open_signed(bytes(flipped), signer, JobManifest)


@given(signing_keys, peer_ids, manifests())
def test_a_signature_by_another_key_is_refused(key: nacl.signing.SigningKey, other: PeerId, manifest: JobManifest) -> None:
    envelope = wire.sign(manifest, key)
    if other.public_key == bytes(key.verify_key):
        return
    with pytest.raises(WireError, match="bad signature"):
        wire.open_signed(envelope, other, JobManifest)


@given(signing_keys, st.data())
def test_self_signed_manifest_checks_against_its_owner(key: nacl.signing.SigningKey, data: st.DataObject) -> None:
    owner = PeerId.from_public_key(bytes(key.verify_key))
    manifest = data.draw(manifests(owner=owner))
    assert wire.open_self_signed(wire.sign(manifest, key), JobManifest, "owner") == manifest
    forged = data.draw(manifests())  # names some other owner, signed with our key
    assume(forged.owner != owner)
    with pytest.raises(WireError, match="bad signature"):
        wire.open_self_signed(wire.sign(forged, key), JobManifest, "owner")


def _raw(msg: object) -> dict[str, object]:
    decoded = cbor2.loads(wire.encode(msg))
    assert isinstance(decoded, dict)
    return decoded


@given(subtasks())
def test_strictness(subtask: Subtask) -> None:
    raw = _raw(subtask)
    cases = {
        "unknown field": {**raw, "extra": 1},
        "missing field": {k: v for k, v in raw.items() if k != "index"},
        "expected an integer": {**raw, "index": "7"},
        "expected an integer, got bool": {**raw, "replica": True},
        "outside": {**raw, "replica": 99},
        "unsupported version": {**raw, "v": 2},
        "unknown message type": {**raw, "t": "nope"},
        "expected 32 bytes": {**raw, "input_sha256": b"short"},
    }
    for expected, bad in cases.items():
        with pytest.raises(WireError, match=expected):
            wire.decode(cbor2.dumps(bad, canonical=True), Subtask)


def test_truncated_trailing_non_canonical_tagged_and_oversize_input() -> None:
    data = wire.encode(Subtask(b"j" * 16, 1, 0, b"h" * 32, 3, b"abc", ()))
    for bad in (data[:-1], data + b"\x00", b""):
        with pytest.raises(WireError):
            wire.decode(bad, Subtask)
    noncanonical = cbor2.dumps(cbor2.loads(data), canonical=False)  # keys in insertion order
    if noncanonical != data:
        with pytest.raises(WireError, match="canonical"):
            wire.decode(noncanonical, Subtask)
    for tagged in (cbor2.CBORTag(1, 0), cbor2.CBORTag(9999, 0)):  # a semantic tag and an unknown one
        with pytest.raises(WireError, match="not allowed|tag"):
            wire.decode(cbor2.dumps(tagged))
    with pytest.raises(WireError, match="over the"):
        wire.decode(b"\x00" * (2 << 20), Subtask)
    with pytest.raises(WireError, match="expected a manifest message, got subtask"):
        wire.decode(data, JobManifest)
    deep = b"\x81" * 100 + b"\x00"
    with pytest.raises(WireError):
        wire.decode(deep)


def test_encode_refuses_out_of_range_fields() -> None:
    with pytest.raises(WireError, match="replica"):
        wire.encode(Subtask(b"j" * 16, 1, 500, b"h" * 32, 3, b"abc", ()))
    with pytest.raises(WireError, match="input is 3 bytes"):
        wire.encode(Subtask(b"j" * 16, 1, 0, b"h" * 32, 4, b"abc", ()))


@given(signing_keys, st.data())
def test_signed_envelopes_round_trip_for_every_type(key: nacl.signing.SigningKey, data: st.DataObject) -> None:
    signer = PeerId.from_public_key(bytes(key.verify_key))
    msg = data.draw(messages)
    envelope = wire.sign(msg, key)
    assert wire.open_signed(envelope, signer, type(msg)) == msg
    assert wire.decode(wire.encode(wire.decode(envelope, wire.Signed))) == wire.decode(envelope, wire.Signed)


@given(signing_keys, st.data())
def test_a_result_is_checked_against_the_executor_it_names(key: nacl.signing.SigningKey, data: st.DataObject) -> None:
    me = PeerId.from_public_key(bytes(key.verify_key))
    claim = data.draw(result_claims(executor=me))
    assert wire.open_self_signed(wire.sign(claim, key), ResultClaim, "executor") == claim
    other = data.draw(result_claims())
    assume(other.executor != me)
    with pytest.raises(WireError, match="bad signature"):
        wire.open_self_signed(wire.sign(other, key), ResultClaim, "executor")


def test_result_status_and_hash_go_together() -> None:
    claim = ResultClaim(b"j" * 16, 0, 0, PeerId.from_public_key(b"k" * 32), "ok", None, 0, 0, "e", "")
    with pytest.raises(WireError, match="output_sha256"):
        wire.encode(claim)


def test_a_claim_carries_the_longest_failure_message_in_any_script() -> None:
    # A task_error's message is compared between replicas: every executor's claim must hold all of it,
    # however many bytes its characters take, and so must the push that carries the claim.
    key = nacl.signing.SigningKey(b"k" * 32)
    me = PeerId.from_public_key(bytes(key.verify_key))
    longest = "\U0001f600" * MESSAGE_MAX
    claim = ResultClaim(b"j" * 16, 2**31 - 1, 31, me, "task_error", None, 1 << 30, 2**62, "\U0001f600" * 64, longest)
    encoded = wire.encode(claim)
    assert wire.decode(encoded, ResultClaim).message == longest
    push = ResultPush(results=(PushedResult(claim=encoded, output=b"", codec=PLAIN),))
    assert wire.decode(wire.encode(push), ResultPush) == push
    with pytest.raises(WireError, match="longer than 500"):
        wire.encode(ResultClaim(b"j" * 16, 0, 0, me, "task_error", None, 0, 0, "e", "x" * (MESSAGE_MAX + 1)))
