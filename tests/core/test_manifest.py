"""Subtasks are checked against the signed manifest, whoever forwarded them."""

from __future__ import annotations

import dataclasses
import os

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core import wire
from meshnode.core.manifest import InputCommitment, JobManifest, Replication, Subtask, TaskLimits, verify_subtask
from meshnode.core.peer_id import PeerId
from meshnode.errors import WireError


def make_job(inputs: list[bytes]) -> tuple[JobManifest, InputCommitment]:
    key = nacl.signing.SigningKey(b"k" * 32)
    commitment = InputCommitment.of(inputs)
    manifest = JobManifest(
        job_id=b"J" * 16,
        owner=PeerId.from_public_key(bytes(key.verify_key)),
        label="test",
        module_sha256=b"m" * 32,
        module_size=100,
        entry="run",
        runtime="wasm",
        rows=0,
        rows_per_subtask=0,
        limits=TaskLimits(fuel=10**9, memory=1 << 20, timeout_ms=1000, max_output=1 << 20),
        nan_canonical=False,
        replication=Replication(replicas=2, quorum=2, max_replicas=5),
        subtask_count=len(inputs),
        inputs_root=commitment.root,
        created_ms=1,
        expires_ms=2,
    )
    return manifest, commitment


input_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=40)


@given(input_lists, st.data())
def test_every_subtask_verifies_inline_or_by_hash(inputs: list[bytes], data: st.DataObject) -> None:
    manifest, commitment = make_job(inputs)
    i = data.draw(st.integers(0, len(inputs) - 1))
    replica = data.draw(st.integers(0, 4))
    for payload in (inputs[i], None):
        subtask = wire.decode(wire.encode(commitment.subtask(manifest.job_id, i, replica, payload)), Subtask)
        verify_subtask(manifest, subtask)


@given(input_lists, st.data())
def test_no_bit_flip_changes_the_work_a_subtask_describes(inputs: list[bytes], data: st.DataObject) -> None:
    """A flipped bit is refused by the decoder or the proof, or touches only the replica label
    (or moves the subtask to an index with the identical input)."""
    manifest, commitment = make_job(inputs)
    i = data.draw(st.integers(0, len(inputs) - 1))
    original = commitment.subtask(manifest.job_id, i, 0, inputs[i])
    raw = bytearray(wire.encode(original))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        subtask = wire.decode(bytes(raw), Subtask)
        verify_subtask(manifest, subtask)
    except WireError:
        return
    # what a flip may change: the replica label, or the index to another index whose committed input
    # is the very same bytes (identical inputs are indistinguishable leaves, and give identical outputs)
    assert inputs[subtask.index] == inputs[original.index]
    assert dataclasses.replace(subtask, replica=0, index=original.index) == original


def test_refusals_name_the_problem() -> None:
    inputs = [b"a", b"b", b"c"]
    manifest, commitment = make_job(inputs)
    good = commitment.subtask(manifest.job_id, 1, 0, b"b")
    cases = {
        "another job": dataclasses.replace(good, job_id=b"X" * 16),
        "beyond the job": dataclasses.replace(good, index=3),
        "max_replicas": dataclasses.replace(good, replica=5),
        "does not match its SHA-256": dataclasses.replace(good, input=b"x"),
        "proof does not match": dataclasses.replace(good, index=2),
    }
    for reason, bad in cases.items():
        with pytest.raises(WireError, match=reason):
            verify_subtask(manifest, bad)


def test_verifying_a_subtask_hashes_a_logarithmic_path() -> None:
    """The cost of a check is log2(n) hashes, whatever the job size (timings: docs/benchmarks.md)."""
    for count in (1, 2, 5, 4096, 4097):
        inputs = [i.to_bytes(4, "big") for i in range(count)]
        manifest, commitment = make_job(inputs)
        for index in {0, count // 2, count - 1}:
            subtask = commitment.subtask(manifest.job_id, index, 0, inputs[index])
            verify_subtask(manifest, subtask)
            assert len(subtask.proof) <= (count - 1).bit_length()
