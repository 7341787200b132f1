"""The job protocol ``/meshnode/jobs/1.0.0``: thieves take replicas from owners and push results back.

A stream carries any number of exchanges, one after another: the client writes
one frame holding a request (core/job_messages.py) and the server answers with
one frame. Opening a libp2p stream costs about 3 ms (a multistream handshake
over the muxer), more than a whole exchange on a LAN, so ``JobClient`` keeps
idle streams per peer and reuses them. The server knows who asks from the
stream's authenticated peer ID, never from the message.

This module is the protocol only: it decodes each request and hands it, with
the authenticated peer that sent it, to a ``JobService`` the node provides
(``job_service.py``), and encodes the answer. It imports nothing of the node.

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

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final, Protocol

import trio

from ..core import wire
from ..core.credit import CreditAsk, CreditReply
from ..core.job import ReplicaRef
from ..core.job_messages import (
    LeaseRenew, ReplicaId, ResultAck, ResultPush, Revocation, StealAsk, StealReply, TransferAsk, TransferReply,
    WorkRefused,
)  # fmt: skip
from ..core.peer_id import PeerId
from ..errors import FrameError, PeerUnavailableError, WireError
from .host import MeshHost
from .refusals import Refusals
from .streams import read_frame, read_request, write_frame

__all__ = ["NOTHING", "PROTOCOL_ID", "JobClient", "JobService", "serve_jobs"]

log = logging.getLogger(__name__)

PROTOCOL_ID: Final = "/meshnode/jobs/1.0.0"
MAX_FRAME: Final = 80 << 20
EXCHANGE_TIMEOUT: Final = 60.0
IDLE_STREAM_SECONDS: Final = 120.0  # a server drops a stream idle this long
MAX_IDLE_STREAMS: Final = 4  # per peer, kept by a client

NOTHING: Final = StealReply(request_id=0, grants=(), lease_ms=0, refused="", surplus=0)
REQUESTS: Final = (StealAsk, ResultPush, LeaseRenew, WorkRefused, TransferAsk, Revocation, CreditAsk)


class JobService(Protocol):
    """What a node does with each job protocol request; ``remote`` is the authenticated peer that sent it.

    The protocol decodes requests and encodes answers; every decision is the service's.
    """

    async def steal(self, remote: PeerId, ask: StealAsk) -> StealReply:
        """A thief asks for work."""

    async def push(self, remote: PeerId, push: ResultPush) -> ResultAck:
        """An executor pushes results; every claim the answer leaves out is pushed again later."""

    async def renew(self, remote: PeerId, renew: LeaseRenew) -> None:
        """A holder is still working on these replicas."""

    async def refused(self, remote: PeerId, refusal: WorkRefused) -> None:
        """A holder will not run these replicas (or hands them back, with no reason)."""

    async def transfer(self, remote: PeerId, ask: TransferAsk) -> TransferReply:
        """A holder robbed in turn asks to hand replicas to another thief."""

    async def revoked(self, remote: PeerId, revocation: Revocation) -> None:
        """An owner tells this node to stop replicas it took."""

    async def credit(self, remote: PeerId, ask: CreditAsk) -> CreditReply:
        """An executor asks for the credit receipts this node signed for it after ``ask.after``."""


def serve_jobs(host: MeshHost, service: JobService, *, dropped: Counter[str] | None = None) -> None:
    """Answer the job protocol with ``service``; refused streams are counted in ``dropped`` (the node's counters)."""
    refusals = Refusals(Counter() if dropped is None else dropped, "jobs", what="a job protocol stream")

    async def answer(remote: PeerId, request: object) -> Any:
        match request:
            case StealAsk():
                return await service.steal(remote, request)
            case ResultPush():
                return await service.push(remote, request)
            case LeaseRenew():
                await service.renew(remote, request)
            case WorkRefused():
                await service.refused(remote, request)
            case TransferAsk():
                return await service.transfer(remote, request)
            case Revocation():
                await service.revoked(remote, request)
            case CreditAsk():
                return await service.credit(remote, request)
            case _:
                raise WireError(f"a {type(request).__name__} is not a job protocol request")  # _next_request checks first
        return NOTHING

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

    async def steal(
        self, owner: PeerId, n: int, request_id: int, engine: str, *, queued: int = 0, runtimes: tuple[str, ...] = ("wasm",)
    ) -> StealReply:
        """Ask ``owner`` for up to ``n`` replicas (``queued``: how many this node already has waiting;
        ``runtimes``: what it can run)."""
        ask = StealAsk(request_id=request_id, n=n, engine=engine, queued=queued, runtimes=runtimes)
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

    async def revoke(self, holder: PeerId, job_id: bytes, replicas: Sequence[ReplicaRef], reason: str) -> None:
        """Tell ``holder`` to stop these replicas of a job this node owns, and not to push their results."""
        revocation = Revocation(job_id=job_id, replicas=_ids(list(replicas)), reason=reason[:300])
        await self._exchange(holder, revocation, StealReply)

    async def credit(self, owner: PeerId, ask: CreditAsk) -> CreditReply:
        """Ask ``owner`` for the credit receipts it signed for this node after ``ask.after``."""
        reply: CreditReply = await self._exchange(owner, ask, CreditReply)
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
