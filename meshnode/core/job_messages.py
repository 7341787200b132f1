"""The messages of the job protocol between a thief (executor) and a job's owner.

    thief -> owner   StealAsk      "I have n idle slots": request_id grows with every ask
    owner -> thief   StealReply    the granted replicas, each job's signed manifest once (and its module,
                                   if small, in a thief's first grant of the job), and the lease
    thief -> owner   ResultPush    result claims, with their outputs
    owner -> thief   ResultAck     one answer per claim; any answer ends the thief's retries
    thief -> owner   LeaseRenew    "still working on these": keeps the leases from lapsing
    thief -> owner   WorkRefused   "I will not run these, and why": the replicas go back unrun
                                   (no reason: handed back to an owner with idle slots)
    holder -> owner  TransferAsk   "another thief robbed me: hand these to it" (stealing from thieves)
    owner -> holder  TransferReply the replicas that moved, with the new holder's lease
    owner -> holder  Revocation    "stop these, and do not push their results": the subtask is
                                   decided, the job cancelled, or the lease lost

LeaseRenew, WorkRefused and Revocation are answered with an empty ``StealReply``; an owner
answers a renewal of replicas that are no longer the holder's with a ``Revocation`` of its own.

Every subtask is still checked by the thief against the owner's signed
manifest before it runs. A claim is not signed: the owner takes it only from
the peer it names as its executor, whom the stream's Noise handshake
authenticated, and shows it to nobody else (docs/protocol.md).
"""

from __future__ import annotations

from .manifest import INLINE_INPUT_MAX
from .result import CLAIM_MAX_SIZE
from .wire import Bool, Bytes, Int, ListOf, Nested, Optional, Str, message, struct, wire

__all__ = [
    "INLINE_MODULE_MAX",
    "JobGrant",
    "LeaseRenew",
    "PushedResult",
    "ReplicaId",
    "ResultAck",
    "ResultAckItem",
    "ResultPush",
    "Revocation",
    "StealAsk",
    "StealReply",
    "TransferAsk",
    "TransferReply",
    "WorkRefused",
]

MAX_BATCH = 256
# A module up to this size rides in a thief's first grant of its job, instead of being fetched by hash
# on a stream of its own: when 49 thieves heard of a job at once, half of them could not open that
# stream to the owner in time, refused their grants, and ran nothing (50 nodes on 2 cores).
INLINE_MODULE_MAX = 64 << 10
MAX_OUTPUT_BYTES = 64 << 20
_MANIFEST_ENVELOPE = Bytes(1, 4096 + 256)
_SUBTASK = Bytes(1, INLINE_INPUT_MAX + 4096)
_CLAIM = Bytes(1, CLAIM_MAX_SIZE)
_ACK_STATUSES = ("accepted", "duplicate", "late", "rejected")


@message("steal_ask", version=1, max_size=512)
class StealAsk:
    request_id: int = wire(Int(0, 2**62))
    n: int = wire(Int(1, MAX_BATCH))
    engine: str = wire(Str(64))
    queued: int = wire(Int(0, 2**31))  # replicas the thief already has waiting (0: it is starving)
    runtimes: tuple[str, ...] = wire(ListOf(Str(64), 8))  # what it can run: it gets no job of another runtime


@struct
class JobGrant:
    manifest: bytes = wire(_MANIFEST_ENVELOPE)  # the owner's signed manifest
    subtasks: tuple[bytes, ...] = wire(ListOf(_SUBTASK, MAX_BATCH))  # encoded Subtask messages
    module: bytes = wire(Bytes(0, INLINE_MODULE_MAX))  # the job's module (its hash is in the manifest), or empty


@message("steal_reply", version=2, max_size=32 << 20)
class StealReply:
    request_id: int = wire(Int(0, 2**62))
    grants: tuple[JobGrant, ...] = wire(ListOf(Nested(JobGrant), 64))
    lease_ms: int = wire(Int(0, 3_600_000))
    refused: str = wire(Str(300))  # why nothing was granted, when that is a refusal ("" otherwise)
    surplus: int = wire(Int(0, 2**31))  # what the victim has left to give after this grant


@struct
class PushedResult:
    claim: bytes = wire(_CLAIM)  # a ResultClaim, encoded; its executor must be the peer that pushes it
    output: bytes | None = wire(Optional(Bytes(0, MAX_OUTPUT_BYTES)))
    codec: int = wire(Int(0, 2))  # how the output is packed: 0 plain, 1 zlib, 2 zstd (the claim hashes the plain bytes)


@message("result_push", version=3, max_size=MAX_OUTPUT_BYTES + (1 << 20))
class ResultPush:
    results: tuple[PushedResult, ...] = wire(ListOf(Nested(PushedResult), MAX_BATCH))


@struct
class ResultAckItem:
    job_id: bytes = wire(Bytes(16, 16))
    index: int = wire(Int(0, 2**31 - 1))
    replica: int = wire(Int(0, 31))
    status: str = wire(Str(16, choices=_ACK_STATUSES))
    reason: str = wire(Str(300))


@message("result_ack", version=1, max_size=128 << 10)
class ResultAck:
    acks: tuple[ResultAckItem, ...] = wire(ListOf(Nested(ResultAckItem), MAX_BATCH))


@struct
class ReplicaId:
    index: int = wire(Int(0, 2**31 - 1))
    replica: int = wire(Int(0, 31))


@message("lease_renew", version=1, max_size=64 << 10)
class LeaseRenew:
    job_id: bytes = wire(Bytes(16, 16))
    replicas: tuple[ReplicaId, ...] = wire(ListOf(Nested(ReplicaId), 4096))


@message("work_refused", version=1, max_size=64 << 10)
class WorkRefused:
    job_id: bytes = wire(Bytes(16, 16))
    replicas: tuple[ReplicaId, ...] = wire(ListOf(Nested(ReplicaId), MAX_BATCH))
    reason: str = wire(Str(300))


@message("transfer_ask", version=1, max_size=64 << 10)
class TransferAsk:
    job_id: bytes = wire(Bytes(16, 16))
    to: bytes = wire(Bytes(1, 128))  # the new holder's peer ID (binary)
    replicas: tuple[ReplicaId, ...] = wire(ListOf(Nested(ReplicaId), MAX_BATCH))


@message("transfer_reply", version=1, max_size=64 << 10)
class TransferReply:
    replicas: tuple[ReplicaId, ...] = wire(ListOf(Nested(ReplicaId), MAX_BATCH))
    lease_ms: int = wire(Int(0, 3_600_000))


@message("revocation", version=1, max_size=64 << 10)
class Revocation:
    job_id: bytes = wire(Bytes(16, 16))
    replicas: tuple[ReplicaId, ...] = wire(ListOf(Nested(ReplicaId), 4096))
    reason: str = wire(Str(300))
