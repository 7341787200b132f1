"""Hypothesis strategies for every wire message type."""

from __future__ import annotations

import nacl.signing
from hypothesis import strategies as st

from meshnode.core.output_codec import CODECS
from meshnode.core.job_messages import (
    JobGrant, LeaseRenew, PushedResult, ReplicaId, ResultAck, ResultAckItem, ResultPush, StealAsk, StealReply,
    Revocation, TransferAsk, TransferReply, WorkRefused,
)
from meshnode.core.manifest import JobManifest, Replication, Subtask, TaskLimits
from meshnode.core.outcome import ERROR_CODES, MESSAGE_MAX
from meshnode.core.peer_id import PeerId
from meshnode.core.presence import Goodbye, Gpu, Presence
from meshnode.core.result import ResultClaim

seeds = st.binary(min_size=32, max_size=32)
signing_keys = seeds.map(nacl.signing.SigningKey)
peer_ids = signing_keys.map(lambda k: PeerId.from_public_key(bytes(k.verify_key)))
hashes = st.binary(min_size=32, max_size=32)

limits = st.builds(
    TaskLimits,
    fuel=st.integers(1, 2**62),
    memory=st.integers(1 << 16, 4 << 30),
    timeout_ms=st.integers(1, 7 * 24 * 3600 * 1000),
    max_output=st.integers(0, 1 << 30),
)


@st.composite
def replications(draw: st.DrawFn) -> Replication:
    max_replicas = draw(st.integers(1, 32))
    return Replication(
        replicas=draw(st.integers(1, max_replicas)),
        quorum=draw(st.integers(1, max_replicas)),
        max_replicas=max_replicas,
    )


@st.composite
def manifests(draw: st.DrawFn, owner: PeerId | None = None) -> JobManifest:
    created = draw(st.integers(0, 2**52))
    return JobManifest(
        job_id=draw(st.binary(min_size=16, max_size=16)),
        owner=owner or draw(peer_ids),
        label=draw(st.text(max_size=50)),
        module_sha256=draw(hashes),
        module_size=draw(st.integers(8, 1 << 30)),
        entry=draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)),
        runtime="wasm", rows=0, rows_per_subtask=0,
        limits=draw(limits),
        nan_canonical=draw(st.booleans()),
        replication=draw(replications()),
        subtask_count=draw(st.integers(1, 2**31)),
        inputs_root=draw(hashes),
        created_ms=created,
        expires_ms=draw(st.integers(created + 1, 2**53)),
    )


@st.composite
def subtasks(draw: st.DrawFn) -> Subtask:
    data = draw(st.none() | st.binary(max_size=300))
    return Subtask(
        job_id=draw(st.binary(min_size=16, max_size=16)),
        index=draw(st.integers(0, 2**31 - 1)),
        replica=draw(st.integers(0, 31)),
        input_sha256=draw(hashes),
        input_size=len(data) if data is not None else draw(st.integers(0, 1 << 30)),
        input=data,
        proof=tuple(draw(st.lists(hashes, max_size=40))),
    )


@st.composite
def result_claims(draw: st.DrawFn, executor: PeerId | None = None) -> ResultClaim:
    status = draw(st.sampled_from(("ok", *ERROR_CODES)))
    return ResultClaim(
        job_id=draw(st.binary(min_size=16, max_size=16)),
        index=draw(st.integers(0, 2**31 - 1)),
        replica=draw(st.integers(0, 31)),
        executor=executor or draw(peer_ids),
        status=status,
        output_sha256=draw(hashes) if status == "ok" else None,
        output_size=draw(st.integers(0, 1 << 30)),
        fuel_used=draw(st.integers(0, 2**62)),
        engine=draw(st.text(max_size=64)),
        message=draw(st.text(max_size=MESSAGE_MAX)),
    )


@st.composite
def presences(draw: st.DrawFn) -> Presence:
    slots = draw(st.integers(0, 4096))
    return Presence(
        peer_id=draw(peer_ids),
        seq=draw(st.integers(0, 2**62)),
        interval_ms=draw(st.integers(100, 60_000)),
        addrs=tuple(draw(st.lists(st.from_regex(r"/ip4/[0-9.]{7,15}/tcp/[0-9]{1,5}", fullmatch=True), max_size=16))),
        version=draw(st.text(max_size=32)),
        engine=draw(st.text(max_size=64)),
        runtimes=tuple(draw(st.lists(st.text(max_size=64), max_size=8))),
        slots=slots,
        idle=draw(st.integers(0, slots)),
        surplus=draw(st.integers(0, 2**31)),
        load1=draw(st.floats(0, 1e6)),
        mem_free=draw(st.integers(0, 2**60)),
        mem_total=draw(st.integers(0, 2**60)),
        cpu=draw(st.text(max_size=200)),
        gpus=tuple(draw(st.lists(st.builds(Gpu, name=st.text(max_size=20), memory=st.integers(0, 2**50)), max_size=4))),
    )


goodbyes = st.builds(Goodbye, peer_id=peer_ids, seq=st.integers(0, 2**62))
small = st.binary(min_size=1, max_size=64)
replica_ids = st.lists(st.builds(ReplicaId, index=st.integers(0, 2**31 - 1), replica=st.integers(0, 31)), max_size=5).map(tuple)
job_messages = st.one_of(
    st.builds(StealAsk, request_id=st.integers(0, 2**62), n=st.integers(1, 256), engine=st.text(max_size=20), queued=st.integers(0, 2**31),
              runtimes=st.lists(st.text(max_size=64), max_size=8).map(tuple)),
    st.builds(
        StealReply, request_id=st.integers(0, 2**62), lease_ms=st.integers(0, 3_600_000), refused=st.text(max_size=30),
        surplus=st.integers(0, 2**31),
        grants=st.lists(st.builds(JobGrant, manifest=small, subtasks=st.lists(small, max_size=3).map(tuple)), max_size=3).map(tuple),
    ),
    st.builds(ResultPush, results=st.lists(st.builds(PushedResult, claim=small, output=st.none() | st.binary(max_size=64), codec=st.sampled_from(CODECS)), max_size=3).map(tuple)),
    st.builds(ResultAck, acks=st.lists(st.builds(
        ResultAckItem, job_id=st.binary(min_size=16, max_size=16), index=st.integers(0, 2**31 - 1),
        replica=st.integers(0, 31), status=st.sampled_from(["accepted", "duplicate", "late", "rejected"]),
        reason=st.text(max_size=30),
    ), max_size=3).map(tuple)),
    st.builds(LeaseRenew, job_id=st.binary(min_size=16, max_size=16), replicas=replica_ids),
    st.builds(WorkRefused, job_id=st.binary(min_size=16, max_size=16), replicas=replica_ids, reason=st.text(max_size=30)),
    st.builds(TransferAsk, job_id=st.binary(min_size=16, max_size=16), to=peer_ids.map(lambda p: p.to_bytes()), replicas=replica_ids),
    st.builds(TransferReply, replicas=replica_ids, lease_ms=st.integers(0, 3_600_000)),
    st.builds(Revocation, job_id=st.binary(min_size=16, max_size=16), replicas=replica_ids, reason=st.text(max_size=30)),
)  # fmt: skip
messages = st.one_of(manifests(), subtasks(), result_claims(), presences(), goodbyes, job_messages)
