"""The blob protocol: fetch a blob (a job module, a large subtask input) from a peer by SHA-256.

Protocol ``/meshnode/blob/1.0.0``, one libp2p stream per blob. Every frame is a
4-byte big-endian length followed by that many bytes (``meshnode.net.streams``).

1. The client opens a stream and sends one frame holding a ``BlobRequest``
   (``t = "blob_request"``, at most 128 bytes): ``sha256``, the 32-byte hash
   of the blob it wants.
2. The server answers with one frame holding a ``BlobResponse``
   (``t = "blob_response"``, at most 160 bytes): ``sha256`` (the requested
   hash, echoed), ``size`` (bytes) and ``found``. A server that does not have
   the blob answers ``found = false, size = 0`` and closes the stream.
3. When ``found``, the content follows in frames of 1 byte to 1 MiB each
   until exactly ``size`` bytes have been sent; then the server closes the
   stream.

The server closes the stream without an answer when the request is malformed
or oversize, or has not arrived within 10 s, and counts it as ``blob_<reason>``
(net/refusals.py): ``empty``, ``truncated``, ``oversize``, ``broken``,
``malformed``, ``wrong_type`` or ``silent``. It serves only blobs that verify
against their hash in its own store, so it never passes on a corrupt file.

The client trusts nothing the server sends:

* the response frame is capped before it is read and decoded strictly;
* a ``size`` over the client's own limit is refused before any content is read;
* each content frame is capped at ``min(1 MiB, bytes still due)`` before it is
  read, so the client never buffers more than ``size`` bytes, and an empty
  frame is refused;
* the SHA-256 of the assembled bytes must equal the requested hash, or the
  bytes are dropped: nothing unverified is stored or used.

A response for another hash, an oversize ``size``, a malformed frame or bytes
that do not match their hash are the server's fault (``WireError``); a missing
blob, a broken stream (including one that ends before ``size`` bytes) and a
timeout are not (``PeerUnavailableError``). Either way ``fetch_from_any``
moves on to the next peer.

Opening a stream costs about 3 ms (multistream-select negotiation) and a
transfer runs at tens of MB/s on loopback, so one stream per blob is cheap next
to the blob itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ..core.blob_messages import REQUEST_MAX_SIZE, RESPONSE_MAX_SIZE, BlobRequest, BlobResponse
from ..core.peer_id import PeerId
from ..core.wire import decode, encode
from ..errors import FrameError, PeerUnavailableError, WireError
from ..storage.blobs import BlobStore
from .host import MeshHost
from .refusals import Refusals
from .streams import read_frame, read_request, write_frame

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_FETCH_TIMEOUT",
    "PROTOCOL_ID",
    "BlobServerStats",
    "fetch_blob",
    "fetch_from_any",
    "serve_blobs",
]

log = logging.getLogger(__name__)

PROTOCOL_ID: Final = "/meshnode/blob/1.0.0"
CHUNK_SIZE: Final = 1 << 20
REQUEST_TIMEOUT: Final = 10.0  # a peer that opens a stream and says nothing does not hold it for long
DEFAULT_FETCH_TIMEOUT: Final = 60.0  # per peer: a 1 GiB blob at tens of MB/s fits with room


# --- server ---------------------------------------------------------------------------------


@dataclass(slots=True)
class BlobServerStats:
    """What the blob server has done since ``serve_blobs``, for status pages and tests."""

    requests: int = 0  # well-formed requests
    served: int = 0  # blobs sent in full
    not_found: int = 0
    refused: int = 0  # malformed requests, or none within the time limit
    bytes_sent: int = 0  # content bytes of the blobs sent in full


def serve_blobs(host: MeshHost, store: BlobStore, *, dropped: Counter[str] | None = None) -> BlobServerStats:
    """Answer blob requests from peers out of ``store``.

    Args:
        host: whose streams to serve.
        store: the blobs to serve.
        dropped: the node's counters, where refused requests are counted by reason.

    Returns:
        Counters the server keeps up to date.
    """
    stats = BlobServerStats()
    refusals = Refusals(Counter() if dropped is None else dropped, "blob", what="a blob protocol stream")

    async def handle(remote: PeerId, stream: Any) -> None:
        await _serve_one(store, stats, refusals, remote, stream)

    host.set_stream_handler(PROTOCOL_ID, handle)
    return stats


async def _serve_one(store: BlobStore, stats: BlobServerStats, refusals: Refusals, remote: PeerId, stream: Any) -> None:
    # The host closes the stream when this returns, which ends every answer.
    request = await _read_request(stream, remote, stats, refusals)
    if request is None:
        return
    stats.requests += 1
    # In a worker thread: reading and re-hashing a big blob would stall the node.
    data = await trio.to_thread.run_sync(store.get, request.sha256)
    if data is None:
        stats.not_found += 1
        await write_frame(stream, encode(BlobResponse(sha256=request.sha256, size=0, found=False)))
        return
    await write_frame(stream, encode(BlobResponse(sha256=request.sha256, size=len(data), found=True)))
    for start in range(0, len(data), CHUNK_SIZE):
        await write_frame(stream, data[start : start + CHUNK_SIZE])
    stats.served += 1
    stats.bytes_sent += len(data)


async def _read_request(stream: Any, remote: PeerId, stats: BlobServerStats, refusals: Refusals) -> BlobRequest | None:
    """The stream's request, or None (refused: counted in ``stats`` and by reason in ``refusals``)."""
    reason, detail = "silent", f"no request within {REQUEST_TIMEOUT:g} s"
    with trio.move_on_after(REQUEST_TIMEOUT):
        try:
            frame = await read_request(stream, REQUEST_MAX_SIZE)
        except FrameError as exc:
            reason, detail = ("empty" if exc.reason == "closed" else exc.reason), str(exc)
        else:
            try:
                request: object = decode(frame)
            except WireError as exc:
                reason, detail = "malformed", str(exc)
            else:
                if isinstance(request, BlobRequest):
                    return request
                reason, detail = "wrong_type", f"a {type(request).__name__} is not a blob request"
    stats.refused += 1
    refusals.refuse(reason, remote, detail)
    return None


# --- client ---------------------------------------------------------------------------------


async def fetch_blob(host: MeshHost, peer: PeerId, sha256: bytes, *, max_size: int, timeout: float) -> bytes:
    """Fetch one blob from one connected peer and verify it against its hash.

    Args:
        host: our host, connected to ``peer``.
        peer: whom to ask.
        sha256: the blob's 32-byte SHA-256.
        max_size: the largest blob to accept; a larger one is refused before
            any of its content is read.
        timeout: seconds for the whole exchange, opening the stream included.

    Returns:
        The blob's bytes, which hash to ``sha256``.

    Raises:
        PeerUnavailableError: the peer does not have the blob, could not be
            reached, broke the stream, or did not finish within ``timeout``.
        WireError: the peer answered wrongly: a malformed response, another
            hash, a blob over ``max_size``, or bytes that do not hash to ``sha256``.
        ValueError: ``sha256`` is not 32 bytes.
    """
    if len(sha256) != 32:
        raise ValueError(f"a SHA-256 is 32 bytes, got {len(sha256)}")
    try:
        with trio.fail_after(timeout):
            stream = await host.open_stream(peer, PROTOCOL_ID, timeout=timeout)
            complete = False
            try:
                data = await _exchange(stream, peer, sha256, max_size)
                complete = True
                return data
            finally:
                await _end_stream(stream, complete)
    except trio.TooSlowError:
        raise PeerUnavailableError(f"blob {_short(sha256)} from {peer}: no answer within {timeout:g} s") from None
    except _network_errors() as exc:
        reason = str(exc)[:200] or type(exc).__name__
        raise PeerUnavailableError(f"blob {_short(sha256)} from {peer}: {reason}") from exc


async def _exchange(stream: Any, peer: PeerId, sha256: bytes, max_size: int) -> bytes:
    await write_frame(stream, encode(BlobRequest(sha256=sha256)))
    response: BlobResponse = decode(await read_frame(stream, RESPONSE_MAX_SIZE), BlobResponse)
    if response.sha256 != sha256:
        raise WireError(f"{peer} answered for blob {_short(response.sha256)} when asked for {_short(sha256)}")
    if not response.found:
        raise PeerUnavailableError(f"{peer} does not have blob {_short(sha256)}")
    if response.size > max_size:
        raise WireError(
            f"{peer} offers blob {_short(sha256)} of {response.size} bytes, over the {max_size}-byte limit"
        )
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    received = 0
    while received < response.size:
        # Capped at what is still due: a peer cannot make us buffer more than it announced.
        chunk = await read_frame(stream, min(CHUNK_SIZE, response.size - received))
        if not chunk:
            raise WireError(f"{peer} sent an empty chunk of blob {_short(sha256)}")
        digest.update(chunk)  # as the chunks arrive, so no single long hash stalls the loop
        chunks.append(chunk)
        received += len(chunk)
    if digest.digest() != sha256:
        raise WireError(f"{peer} sent {received} bytes that do not hash to blob {_short(sha256)}")
    return b"".join(chunks)


async def _end_stream(stream: Any, complete: bool) -> None:
    """Close a stream after a complete answer; reset it otherwise, so the peer stops sending.

    Shielded and bounded: it also runs when the fetch was cancelled or timed out.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            if complete:
                await stream.close()
            else:
                await stream.reset()
        except Exception as exc:  # the stream is finished with either way
            log.debug("ending a blob stream: %s", exc)


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a broken stream raises. libp2p is imported here, not at the top: it is slow to import."""
    from libp2p.exceptions import BaseLibp2pError

    return (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def _short(sha256: bytes) -> str:
    return sha256.hex()[:16]


# --- fetching through the store -------------------------------------------------------------

# The fetch in flight for each (store, hash): later callers wait for it rather
# than fetching the same bytes again. Keyed by the store's directory, so two
# BlobStore objects on one directory share it.
_in_flight: dict[tuple[Path, bytes], trio.Event] = {}


async def fetch_from_any(
    host: MeshHost,
    peers: Sequence[PeerId],
    sha256: bytes,
    store: BlobStore,
    *,
    max_size: int | None = None,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
) -> bytes:
    """A blob from the store, or else from the first of ``peers`` that delivers it intact (then stored).

    Concurrent calls for one hash and store make one network fetch: the others
    wait for it and read the store. If it fails, the next caller tries its own
    peers.

    Args:
        host: our host, connected to the peers.
        peers: whom to ask, in order of preference.
        sha256: the blob's 32-byte SHA-256.
        store: where to look first and where to keep what was fetched.
        max_size: the largest blob to accept (never more than the store's own cap,
            the default).
        timeout: seconds allowed per peer.

    Returns:
        The blob's bytes, which hash to ``sha256``.

    Raises:
        PeerUnavailableError: no peer delivered it; the message says why for each.
        ValueError: ``sha256`` is not 32 bytes.
        OSError: the store could not be read or written.
    """
    if len(sha256) != 32:
        raise ValueError(f"a SHA-256 is 32 bytes, got {len(sha256)}")
    limit = store.max_blob_size if max_size is None else min(max_size, store.max_blob_size)
    data = await trio.to_thread.run_sync(store.get, sha256)
    if data is not None:
        return data
    key = (store.root, sha256)
    while (pending := _in_flight.get(key)) is not None:
        await pending.wait()
    done = trio.Event()
    _in_flight[key] = done
    try:
        # Again, now that no fetch is in flight: one may have stored it since we looked.
        data = await trio.to_thread.run_sync(store.get, sha256)
        if data is None:
            data = await _fetch_and_store(host, peers, sha256, store, limit, timeout)
        return data
    finally:
        del _in_flight[key]
        done.set()


async def _fetch_and_store(
    host: MeshHost, peers: Sequence[PeerId], sha256: bytes, store: BlobStore, max_size: int, timeout: float
) -> bytes:
    failures: list[str] = []
    for peer in peers:
        if peer == host.peer_id:
            continue
        try:
            data = await fetch_blob(host, peer, sha256, max_size=max_size, timeout=timeout)
        except PeerUnavailableError as exc:
            failures.append(str(exc)[:300])
            continue
        except WireError as exc:
            log.warning("dropped a bad answer for blob %s from %s: %s", _short(sha256), peer, exc)
            failures.append(str(exc)[:300])
            continue
        await trio.to_thread.run_sync(store.put, data)
        return data
    reasons = "; ".join(failures) or "no peer to ask"
    raise PeerUnavailableError(f"no peer delivered blob {_short(sha256)}: {reasons}")
