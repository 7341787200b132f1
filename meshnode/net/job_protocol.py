"""The job protocol ``/meshnode/jobs/1.0.0``: thieves take replicas from owners and push results back.

A stream carries any number of exchanges, one after another: the client writes
one frame holding a request (core/job_messages.py) and the server answers with
one frame. Opening a libp2p stream costs about 3 ms (a multistream handshake
over the muxer), more than a whole exchange on a LAN, so ``JobClient`` keeps
idle streams per peer and reuses them. The server knows who asks from the
stream's authenticated peer ID, never from the message.

The owner checks every pushed claim: it must be signed by the executor it
names, that executor must be the peer on the stream (a node cannot push
another node's results), and the output must hash to the claim's hash. A
claim that fails is acknowledged as ``rejected`` with the reason; the job
state machine answers the rest (accepted, duplicate, late).

A stream that carries anything but well-formed requests is refused: the
server closes it, counts it by reason and logs why (net/refusals.py). The
reasons, counted as ``jobs_<reason>``: ``empty`` (closed before a first
request), ``truncated``, ``oversize`` (a length prefix over 80 MiB), ``broken``
(reset before a first request), ``malformed`` (not a meshnode message),
``wrong_type`` (a meshnode message that is not a job request) and ``silent``
(no first request within ``IDLE_STREAM_SECONDS``). A stream that ends, goes
quiet or is reset after at least one exchange is a client done with it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ..core import wire
from ..core.job import Ack, Grant, ReleaseReplicas, RenewLeases, ReplicaRef, StealRequest, TransferReplicas, Transferred
from ..core.job_messages import (
    JobGrant, LeaseRenew, ReplicaId, ResultAck, ResultAckItem, ResultPush, StealAsk, StealReply, TransferAsk,
    TransferReply, WorkRefused,
)  # fmt: skip
from ..core.output_codec import plain_output
from ..core.peer_id import PeerId
from ..core.result import ResultClaim
from ..errors import JournalError, PeerUnavailableError, WireError
from ..jobs import JobManager, RunningJob
from .host import MeshHost
from .refusals import Refusals
from .streams import FrameError, read_frame, read_request, write_frame

__all__ = ["PROTOCOL_ID", "GrantPolicy", "JobClient", "Resteal", "serve_jobs"]

log = logging.getLogger(__name__)

PROTOCOL_ID: Final = "/meshnode/jobs/1.0.0"
MAX_FRAME: Final = 80 << 20
EXCHANGE_TIMEOUT: Final = 60.0
IDLE_STREAM_SECONDS: Final = 120.0  # a server drops a stream idle this long
MAX_IDLE_STREAMS: Final = 4  # per peer, kept by a client

# How many replicas a thief may have of what it asked for (its reputation decides).
GrantPolicy = Callable[[PeerId, int], int]
# Stealing from thieves: serve a thief from the work this node stole, if it has any to spare.
Resteal = Callable[[PeerId, StealAsk], Awaitable[StealReply | None]]

NOTHING: Final = StealReply(request_id=0, grants=(), lease_ms=0, refused="", surplus=0)
REQUESTS: Final = (StealAsk, ResultPush, LeaseRenew, WorkRefused, TransferAsk)


# --- owner side ---------------------------------------------------------------------------------


def serve_jobs(
    host: MeshHost, manager: JobManager, *, policy: GrantPolicy | None = None, resteal: Resteal | None = None,
    on_release: Callable[[RunningJob], None] = lambda job: None, dropped: Counter[str] | None = None,
) -> None:
    """Answer thieves from the jobs ``manager`` owns (then, with ``resteal``, from stolen work).

    ``on_release`` is called when replicas come back to a job unrun (to wake idle slots).
    Refused streams are counted in ``dropped`` (the node's counters), by reason.
    """
    refusals = Refusals(Counter() if dropped is None else dropped, "jobs", what="a job protocol stream")

    async def answer(remote: PeerId, request: object) -> Any:
        now = time.monotonic()
        if isinstance(request, StealAsk):
            allowed = request.n if policy is None else policy(remote, request.n)
            if allowed <= 0:
                return StealReply(request_id=request.request_id, grants=(), lease_ms=0,
                                  refused="peers with a better record are waiting for work", surplus=0)  # fmt: skip
            reply = _grant(manager, remote, request, allowed, now)
            if not reply.grants and resteal is not None:
                reply = await resteal(remote, request) or reply
            return reply
        if isinstance(request, ResultPush):
            return await _receive(manager, remote, request)
        if isinstance(request, LeaseRenew | WorkRefused | TransferAsk):
            job = manager.jobs.get(request.job_id)
            refs = tuple(ReplicaRef(r.index, r.replica) for r in request.replicas)
            if isinstance(request, TransferAsk):
                return _transfer(job, remote, request.to, refs, now)
            if job is not None and isinstance(request, LeaseRenew):
                manager.apply(job, job.owner.handle(RenewLeases(remote, refs, now)))
            elif job is not None and isinstance(request, WorkRefused):
                if request.reason:  # an empty reason hands them back: this node has idle slots
                    log.warning("peer %s refused %d replicas of job %s: %s", remote, len(refs), job.job_id.hex()[:12], request.reason)
                    job.refusals[str(remote)] = request.reason
                manager.apply(job, job.owner.handle(ReleaseReplicas(remote, refs, now)))
                on_release(job)
            return NOTHING
        raise WireError(f"a {type(request).__name__} is not a job protocol request")  # _next_request checks first

    async def handle(remote: PeerId, stream: Any) -> None:
        served = 0
        while True:
            request = await _next_request(stream, remote, refusals, first=served == 0)
            if request is None:
                return
            try:
                reply = await answer(remote, request)
            except WireError as exc:  # a request whose content no job could take
                refusals.refuse("malformed", remote, str(exc))
                return
            await write_frame(stream, wire.encode(reply))
            served += 1

    host.set_stream_handler(PROTOCOL_ID, handle)


async def _next_request(stream: Any, remote: PeerId, refusals: Refusals, *, first: bool) -> object | None:
    """The next request on a stream, or None when the stream is done with (refused, with the reason counted).

    After the first exchange a stream that ends, breaks or goes quiet is a client
    that has finished with it, and is not counted.
    """
    frame = None
    with trio.move_on_after(IDLE_STREAM_SECONDS):
        try:
            frame = await read_request(stream, MAX_FRAME)
        except FrameError as exc:
            if first or exc.reason not in ("closed", "broken"):
                reason = "empty" if exc.reason == "closed" else exc.reason
                refusals.refuse(reason, remote, str(exc))
            return None
    if frame is None:
        if first:
            refusals.refuse("silent", remote, f"no request within {IDLE_STREAM_SECONDS:g} s")
        return None
    try:
        request: object = wire.decode(frame)
    except WireError as exc:
        refusals.refuse("malformed", remote, str(exc))
        return None
    if not isinstance(request, REQUESTS):
        refusals.refuse("wrong_type", remote, f"a {type(request).__name__} is not a job protocol request")
        return None
    return request


def _grant(manager: JobManager, thief: PeerId, ask: StealAsk, allowed: int, now: float) -> StealReply:
    grants: list[JobGrant] = []
    lease_ms = 0
    wanted = min(ask.n, allowed)
    for job in list(manager.jobs.values()):
        if wanted <= 0:
            break
        if job.owner.finished or job.paused or job.owner.surplus() == 0:
            continue
        for instruction in job.owner.handle(StealRequest(thief, wanted, ask.request_id, now)):
            if isinstance(instruction, Grant) and instruction.replicas:
                try:
                    subtasks = tuple(_subtasks(manager, job, instruction.replicas))
                except JournalError as exc:  # the thief gets nothing of this job; its leases lapse
                    log.warning("job %s: cannot hand out work: %s", job.job_id.hex()[:12], exc)
                    continue
                grants.append(JobGrant(manifest=job.envelope, subtasks=subtasks))
                lease_ms = max(lease_ms, round((instruction.expires - now) * 1000))
                wanted -= len(instruction.replicas)
    # With nothing granted, nothing is left for this thief, whatever others could take:
    # it should not come back before it hears of new work.
    surplus = sum(j.owner.surplus() for j in manager.jobs.values() if not j.owner.finished) if grants else 0
    return StealReply(request_id=ask.request_id, grants=tuple(grants), lease_ms=lease_ms, refused="", surplus=surplus)


def _subtasks(manager: JobManager, job: RunningJob, refs: tuple[ReplicaRef, ...]) -> list[bytes]:
    """The granted subtasks, encoded: large inputs by hash, each with its Merkle proof."""
    return [wire.encode(s) for s in manager.subtasks(job, refs)]


def _transfer(job: RunningJob | None, holder: PeerId, to: bytes, refs: tuple[ReplicaRef, ...], now: float) -> TransferReply:
    try:
        new_holder: PeerId | None = PeerId(to)
    except WireError:
        new_holder = None
    if job is None or new_holder is None or job.owner.finished:
        return TransferReply(replicas=(), lease_ms=0)
    for instruction in job.owner.handle(TransferReplicas(holder, new_holder, refs, now)):
        if isinstance(instruction, Transferred) and instruction.replicas:
            moved = tuple(ReplicaId(index=r.index, replica=r.replica) for r in instruction.replicas)
            return TransferReply(replicas=moved, lease_ms=round((instruction.expires - now) * 1000))
    return TransferReply(replicas=(), lease_ms=0)


async def _receive(manager: JobManager, executor: PeerId, push: ResultPush) -> ResultAck:
    acks: list[ResultAckItem] = []
    by_job: dict[bytes, list[tuple[ResultClaim, bytes | None]]] = {}
    for pushed in push.results:
        try:
            claim = wire.open_self_signed(pushed.claim, ResultClaim, "executor")
        except WireError as exc:
            log.debug("rejected a pushed claim from %s: %s", executor, exc)
            continue  # not even a job id to answer to
        try:
            output = plain_output(pushed)
        except WireError as exc:
            acks.append(_ack(claim, "rejected", str(exc)[:300]))
            continue
        problem = _problem(manager, executor, claim, output)
        if problem is not None:
            acks.append(_ack(claim, *problem))
        else:
            by_job.setdefault(claim.job_id, []).append((claim, output if claim.status == "ok" else None))
    for job_id, claims in by_job.items():
        job = manager.jobs.get(job_id)
        if job is None or job.paused:
            continue  # no answer: the executor keeps the results and pushes them again later
        try:
            said = await manager.receive_claims(job, claims)
        except JournalError:
            continue  # the verdicts wait for the journal: acknowledge nothing yet
        answers = {(i.executor, i.replica): i for i in said if isinstance(i, Ack) and i.executor == executor}
        for claim, _ in claims:
            a = answers.get((executor, ReplicaRef(claim.index, claim.replica)))
            acks.append(_ack(claim, a.status, a.reason) if a is not None else _ack(claim, "accepted"))
    return ResultAck(acks=tuple(acks))


def _problem(manager: JobManager, executor: PeerId, claim: ResultClaim, output: bytes | None) -> tuple[str, str] | None:
    if claim.executor != executor:
        return "rejected", f"pushed by {executor} but signed for {claim.executor}"
    if claim.status == "ok" and (output is None or hashlib.sha256(output).digest() != claim.output_sha256):
        return "rejected", "the output does not match the claim's hash"
    if claim.job_id not in manager.jobs:
        return "late", "no such running job here"
    return None


def _ack(claim: ResultClaim, status: str, reason: str = "") -> ResultAckItem:
    return ResultAckItem(job_id=claim.job_id, index=claim.index, replica=claim.replica, status=status, reason=reason)


# --- client side --------------------------------------------------------------------------------


class JobClient:
    """Requests to peers' job protocol over reused streams.

    Every method raises ``PeerUnavailableError`` when the peer cannot be reached or
    does not answer in time, and ``WireError`` for a malformed answer.
    """

    def __init__(self, host: MeshHost, timeout: float = EXCHANGE_TIMEOUT) -> None:
        self.host = host
        self.timeout = timeout
        self._idle: dict[PeerId, list[Any]] = {}

    async def steal(self, owner: PeerId, n: int, request_id: int, engine: str, *, queued: int = 0) -> StealReply:
        """Ask ``owner`` for up to ``n`` replicas (``queued``: how many this node already has waiting)."""
        ask = StealAsk(request_id=request_id, n=n, engine=engine, queued=queued)
        reply: StealReply = await self._exchange(owner, ask, StealReply)
        if reply.request_id != request_id:
            raise WireError("a steal reply for another request")
        return reply

    async def push(self, owner: PeerId, push: ResultPush) -> ResultAck:
        """Send signed results to their owner; its acknowledgements."""
        ack: ResultAck = await self._exchange(owner, push, ResultAck)
        return ack

    async def renew(self, owner: PeerId, job_id: bytes, replicas: list[ReplicaRef]) -> None:
        await self._exchange(owner, LeaseRenew(job_id=job_id, replicas=_ids(replicas)), StealReply)

    async def refuse(self, owner: PeerId, job_id: bytes, replicas: list[ReplicaRef], reason: str) -> None:
        """Tell the owner why these replicas will not run here; they go back to its deque."""
        await self._exchange(owner, WorkRefused(job_id=job_id, replicas=_ids(replicas), reason=reason[:300]), StealReply)

    async def transfer(self, owner: PeerId, job_id: bytes, to: PeerId, replicas: list[ReplicaRef]) -> TransferReply:
        """Ask the owner to hand replicas this node holds to the thief ``to``."""
        ask = TransferAsk(job_id=job_id, to=to.to_bytes(), replicas=_ids(replicas))
        reply: TransferReply = await self._exchange(owner, ask, TransferReply)
        return reply

    def forget(self, peer: PeerId) -> None:
        """Drop the idle streams to a peer that went away."""
        self._idle.pop(peer, None)

    async def _exchange(self, peer: PeerId, request: Any, expected: type) -> Any:
        frame = wire.encode(request)
        try:
            with trio.fail_after(self.timeout):
                while True:
                    pooled = self._idle.get(peer)
                    reused = bool(pooled)
                    stream = pooled.pop() if pooled else await self.host.open_stream(peer, PROTOCOL_ID)
                    try:
                        await write_frame(stream, frame)
                        answer = await read_frame(stream, MAX_FRAME)
                    except Exception:
                        await _close(stream)
                        if reused:
                            continue  # a reused stream may have died while idle: try a fresh one
                        raise
                    self._idle.setdefault(peer, [])
                    if len(self._idle[peer]) < MAX_IDLE_STREAMS:
                        self._idle[peer].append(stream)
                    else:
                        await _close(stream)
                    return wire.decode(answer, expected)
        except trio.TooSlowError:
            raise PeerUnavailableError(f"{peer} did not answer within {self.timeout:g} s") from None
        except (WireError, PeerUnavailableError):
            raise
        except Exception as exc:  # a broken stream
            raise PeerUnavailableError(f"job exchange with {peer} failed: {str(exc)[:200]}") from exc


def _ids(refs: list[ReplicaRef]) -> tuple[ReplicaId, ...]:
    return tuple(ReplicaId(index=r.index, replica=r.replica) for r in refs)


async def _close(stream: Any) -> None:
    with trio.move_on_after(1):
        try:
            await stream.close()
        except Exception:
            pass
