"""The job protocol ``/meshnode/jobs/1.0.0``: thieves take replicas from owners and push results back.

One stream per exchange: the client writes one frame holding a ``StealAsk``,
``ResultPush`` or ``LeaseRenew`` (core/job_messages.py) and the owner answers
with one frame (``StealReply``, ``ResultAck``, or a ``StealReply`` with no
grants for a renewal). The owner knows who asks from the stream's
authenticated peer ID, never from the message.

The owner checks every pushed claim: it must be signed by the executor it
names, that executor must be the peer on the stream (a node cannot push
another node's results), and the output must hash to the claim's hash. A
claim that fails is acknowledged as ``rejected`` with the reason; the job
state machine answers the rest (accepted, duplicate, late).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Final

from ..core import wire
from ..core.job import Ack, Grant, RenewLeases, ReplicaRef, StealRequest
from ..core.job_messages import (
    JobGrant,
    LeaseRenew,
    ReplicaId,
    ResultAck,
    ResultAckItem,
    ResultPush,
    StealAsk,
    StealReply,
)
from ..core.manifest import INLINE_INPUT_MAX
from ..core.peer_id import PeerId
from ..core.result import ResultClaim
from ..errors import PeerUnavailableError, WireError
from ..jobs import JobManager, RunningJob
from .host import MeshHost
from .streams import read_frame, write_frame

__all__ = ["PROTOCOL_ID", "push_results", "renew_leases", "serve_jobs", "steal"]

log = logging.getLogger(__name__)

PROTOCOL_ID: Final = "/meshnode/jobs/1.0.0"
MAX_FRAME: Final = 80 << 20
EXCHANGE_TIMEOUT: Final = 60.0


# --- owner side ---------------------------------------------------------------------------------


def serve_jobs(host: MeshHost, manager: JobManager) -> None:
    """Answer thieves from the jobs ``manager`` owns."""

    async def handle(remote: PeerId, stream: Any) -> None:
        request: object = wire.decode(await read_frame(stream, MAX_FRAME))
        now = time.monotonic()
        if isinstance(request, StealAsk):
            reply: Any = _grant(manager, remote, request, now)
        elif isinstance(request, ResultPush):
            reply = _receive(manager, remote, request)
        elif isinstance(request, LeaseRenew):
            job = manager.jobs.get(request.job_id)
            if job is not None:
                refs = tuple(ReplicaRef(r.index, r.replica) for r in request.replicas)
                manager.apply(job, job.owner.handle(RenewLeases(remote, refs, now)))
            reply = StealReply(request_id=0, grants=(), lease_ms=0, refused="")
        else:
            raise WireError(f"a {type(request).__name__} is not a job protocol request")
        await write_frame(stream, wire.encode(reply))

    host.set_stream_handler(PROTOCOL_ID, handle)


def _grant(manager: JobManager, thief: PeerId, ask: StealAsk, now: float) -> StealReply:
    grants: list[JobGrant] = []
    lease_ms = 0
    wanted = ask.n
    for job in list(manager.jobs.values()):
        if wanted <= 0:
            break
        if job.owner.finished or job.owner.surplus() == 0:
            continue
        for instruction in job.owner.handle(StealRequest(thief, wanted, ask.request_id, now)):
            if isinstance(instruction, Grant) and instruction.replicas:
                grants.append(JobGrant(manifest=job.envelope, subtasks=tuple(_subtasks(manager, job, instruction))))
                lease_ms = max(lease_ms, round((instruction.expires - now) * 1000))
                wanted -= len(instruction.replicas)
    return StealReply(request_id=ask.request_id, grants=tuple(grants), lease_ms=lease_ms, refused="")


def _subtasks(manager: JobManager, job: RunningJob, grant: Grant) -> list[bytes]:
    out = []
    for ref in grant.replicas:
        size = job.commitment.sizes[ref.index]
        data = manager.blobs.get(job.commitment.digests[ref.index]) if size <= INLINE_INPUT_MAX else None
        out.append(wire.encode(job.commitment.subtask(job.job_id, ref.index, ref.replica, data)))
    return out


def _receive(manager: JobManager, executor: PeerId, push: ResultPush) -> ResultAck:
    acks = []
    for pushed in push.results:
        try:
            claim = wire.open_self_signed(pushed.claim, ResultClaim, "executor")
        except WireError as exc:
            log.debug("rejected a pushed claim from %s: %s", executor, exc)
            continue  # not even a job id to answer to
        item = _check_and_apply(manager, executor, claim, pushed.output)
        acks.append(item)
    return ResultAck(acks=tuple(acks))


def _check_and_apply(manager: JobManager, executor: PeerId, claim: ResultClaim, output: bytes | None) -> ResultAckItem:
    def ack(status: str, reason: str = "") -> ResultAckItem:
        return ResultAckItem(job_id=claim.job_id, index=claim.index, replica=claim.replica, status=status, reason=reason)

    if claim.executor != executor:
        return ack("rejected", f"pushed by {executor} but signed for {claim.executor}")
    if claim.status == "ok" and (output is None or hashlib.sha256(output).digest() != claim.output_sha256):
        return ack("rejected", "the output does not match the claim's hash")
    job = manager.jobs.get(claim.job_id)
    if job is None:
        return ack("late", "no such running job here")
    for instruction in manager.receive_claim(job, claim, output if claim.status == "ok" else None):
        if isinstance(instruction, Ack) and instruction.executor == executor and instruction.replica == ReplicaRef(claim.index, claim.replica):
            return ack(instruction.status, instruction.reason)
    return ack("accepted")


# --- thief side ---------------------------------------------------------------------------------


async def _exchange(host: MeshHost, peer: PeerId, request: Any, expected: type, timeout: float) -> Any:
    import trio

    try:
        with trio.fail_after(timeout):
            stream = await host.open_stream(peer, PROTOCOL_ID)
            try:
                await write_frame(stream, wire.encode(request))
                return wire.decode(await read_frame(stream, MAX_FRAME), expected)
            finally:
                with trio.move_on_after(1):
                    await stream.close()
    except trio.TooSlowError:
        raise PeerUnavailableError(f"{peer} did not answer within {timeout:g} s") from None
    except WireError:
        raise
    except PeerUnavailableError:
        raise
    except Exception as exc:  # a broken stream
        raise PeerUnavailableError(f"job exchange with {peer} failed: {str(exc)[:200]}") from exc


async def steal(host: MeshHost, owner: PeerId, n: int, request_id: int, engine: str, timeout: float = EXCHANGE_TIMEOUT) -> StealReply:
    """Ask ``owner`` for up to ``n`` replicas.

    Raises:
        PeerUnavailableError: no answer. WireError: a malformed answer.
    """
    reply: StealReply = await _exchange(host, owner, StealAsk(request_id=request_id, n=n, engine=engine), StealReply, timeout)
    if reply.request_id != request_id:
        raise WireError("a steal reply for another request")
    return reply


async def push_results(host: MeshHost, owner: PeerId, push: ResultPush, timeout: float = EXCHANGE_TIMEOUT) -> ResultAck:
    """Send signed results to their owner; its acknowledgements."""
    ack: ResultAck = await _exchange(host, owner, push, ResultAck, timeout)
    return ack


async def renew_leases(host: MeshHost, owner: PeerId, job_id: bytes, replicas: list[tuple[int, int]]) -> None:
    renew = LeaseRenew(job_id=job_id, replicas=tuple(ReplicaId(index=i, replica=r) for i, r in replicas))
    await _exchange(host, owner, renew, StealReply, EXCHANGE_TIMEOUT)
