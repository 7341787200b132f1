"""The blob protocol between real libp2p hosts on loopback: transfers, caps, liars, dedup."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from meshnode.core.blob_messages import REQUEST_MAX_SIZE, BlobRequest, BlobResponse
from meshnode.core.peer_id import PeerId
from meshnode.core.wire import decode, encode
from meshnode.errors import PeerUnavailableError, WireError
from meshnode.net.blob_protocol import PROTOCOL_ID, fetch_blob, fetch_from_any, serve_blobs
from meshnode.net.host import MeshHost, open_host
from meshnode.net.streams import read_frame, write_frame
from meshnode.storage.blobs import BlobStore
from meshnode.storage.identity import load_or_create_identity

from ..waiting import STEP

MiB = 1 << 20
TIMEOUT = STEP  # per fetch: a deadline for a hang, not a measure of speed


@asynccontextmanager
async def open_hosts(tmp_path: Path, *names: str) -> AsyncIterator[list[MeshHost]]:
    """One host per name; the first (the client) is connected to all the others."""
    async with AsyncExitStack() as stack:
        hosts = []
        for name in names:
            identity = load_or_create_identity(tmp_path / name)
            hosts.append(await stack.enter_async_context(open_host(identity, ["/ip4/127.0.0.1/tcp/0"])))
        client, *servers = hosts
        for server in servers:
            await client.dial(server.peer_id, server.listen_addrs)
        yield hosts


Answer = Callable[[BlobRequest, Any], Awaitable[None]]


def serve_answers(host: MeshHost, answer: Answer) -> list[BlobRequest]:
    """A test-only server on the blob protocol: reads each request and answers it with ``answer``."""
    requests: list[BlobRequest] = []

    async def handle(remote: PeerId, stream: Any) -> None:
        request = decode(await read_frame(stream, REQUEST_MAX_SIZE), BlobRequest)
        requests.append(request)
        await answer(request, stream)

    host.set_stream_handler(PROTOCOL_ID, handle)
    return requests


def claim(content: bytes) -> Answer:
    """Answer every request with ``content``, claimed to be the blob asked for (a lie, unless it is)."""

    async def answer(request: BlobRequest, stream: Any) -> None:
        await write_frame(stream, encode(BlobResponse(sha256=request.sha256, size=len(content), found=True)))
        await write_frame(stream, content)

    return answer


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def test_a_small_and_a_5_mib_blob_arrive_intact(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "server") as (client, server):
        store = BlobStore(tmp_path / "server-blobs")
        stats = serve_blobs(server, store)
        small, big = b"a wasm module, say", os.urandom(5 * MiB + 123)  # not a whole number of chunks
        store.put(small)
        store.put(big)

        got = await fetch_blob(client, server.peer_id, sha(small), max_size=MiB, timeout=TIMEOUT)
        assert got == small
        start = time.perf_counter()
        got = await fetch_blob(client, server.peer_id, sha(big), max_size=8 * MiB, timeout=TIMEOUT)
        took = time.perf_counter() - start
        assert got == big
        rate = len(big) / took / 1e6
        print(f"5 MiB blob over loopback: {took * 1000:.0f} ms, {rate:.0f} MB/s")
        assert rate > 5, f"{rate:.1f} MB/s"  # tens of MB/s expected; this only catches a pathology
        assert (stats.requests, stats.served, stats.bytes_sent) == (2, 2, len(small) + len(big))


async def test_a_blob_the_peer_does_not_have_is_peer_unavailable(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "server") as (client, server):
        stats = serve_blobs(server, BlobStore(tmp_path / "server-blobs"))
        with pytest.raises(PeerUnavailableError, match="does not have"):
            await fetch_blob(client, server.peer_id, sha(b"nobody has this"), max_size=MiB, timeout=TIMEOUT)
        assert stats.not_found == 1


async def test_a_server_does_not_serve_a_corrupt_file_and_drops_it(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "server") as (client, server):
        store = BlobStore(tmp_path / "server-blobs")
        serve_blobs(server, store)
        blob_sha = store.put(b"good bytes")
        store.path(blob_sha).write_bytes(b"rotten!!!!")
        with pytest.raises(PeerUnavailableError, match="does not have"):
            await fetch_blob(client, server.peer_id, blob_sha, max_size=MiB, timeout=TIMEOUT)
        assert not store.has(blob_sha)


async def test_bytes_that_do_not_match_the_hash_are_refused_and_not_stored(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "liar") as (client, liar):
        serve_answers(liar, claim(b"not what you asked for"))
        wanted = sha(b"the real thing")
        with pytest.raises(WireError, match="do not hash to"):
            await fetch_blob(client, liar.peer_id, wanted, max_size=MiB, timeout=TIMEOUT)

        store = BlobStore(tmp_path / "client-blobs")
        with pytest.raises(PeerUnavailableError, match="do not hash to"):
            await fetch_from_any(client, [liar.peer_id], wanted, store, timeout=TIMEOUT)
        assert not store.has(wanted)
        assert store.total_bytes() == 0


async def test_an_answer_for_another_hash_is_refused(tmp_path: Path) -> None:
    async def answer_another(request: BlobRequest, stream: Any) -> None:
        content = b"some other blob"
        await write_frame(stream, encode(BlobResponse(sha256=sha(content), size=len(content), found=True)))
        await write_frame(stream, content)

    async with open_hosts(tmp_path, "client", "liar") as (client, liar):
        serve_answers(liar, answer_another)
        with pytest.raises(WireError, match="when asked for"):
            await fetch_blob(client, liar.peer_id, sha(b"wanted"), max_size=MiB, timeout=TIMEOUT)


async def test_an_oversize_blob_is_refused_before_any_content_is_read(tmp_path: Path) -> None:
    release = trio.Event()

    async def announce_a_terabyte(request: BlobRequest, stream: Any) -> None:
        await write_frame(stream, encode(BlobResponse(sha256=request.sha256, size=1 << 40, found=True)))
        with trio.move_on_after(TIMEOUT):
            await release.wait()  # and never send a byte of it

    async with open_hosts(tmp_path, "client", "liar", "server") as (client, liar, server):
        serve_answers(liar, announce_a_terabyte)
        start = time.perf_counter()
        with pytest.raises(WireError, match="over the 1048576-byte limit"):
            await fetch_blob(client, liar.peer_id, sha(b"huge"), max_size=MiB, timeout=TIMEOUT)
        # Had it waited for the content, it would have timed out (PeerUnavailableError), and not before now.
        assert time.perf_counter() - start < TIMEOUT
        release.set()

        store = BlobStore(tmp_path / "server-blobs")
        stats = serve_blobs(server, store)
        blob_sha = store.put(os.urandom(MiB + 1))
        with pytest.raises(WireError, match="over the 1048576-byte limit"):
            await fetch_blob(client, server.peer_id, blob_sha, max_size=MiB, timeout=TIMEOUT)
        assert stats.served == 0


async def test_a_silent_peer_times_out_as_unavailable(tmp_path: Path) -> None:
    release = trio.Event()

    async def say_nothing(request: BlobRequest, stream: Any) -> None:
        with trio.move_on_after(TIMEOUT):
            await release.wait()  # and then close the stream, unanswered

    async with open_hosts(tmp_path, "client", "mute") as (client, mute):
        serve_answers(mute, say_nothing)
        start = time.perf_counter()
        with pytest.raises(PeerUnavailableError, match="no answer within 0.3 s"):
            await fetch_blob(client, mute.peer_id, sha(b"x"), max_size=MiB, timeout=0.3)
        # it gave up after its own timeout, not when the peer closed the stream
        assert 0.3 <= time.perf_counter() - start < TIMEOUT
        release.set()


async def test_a_malformed_request_gets_the_stream_closed(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "server") as (client, server):
        store = BlobStore(tmp_path / "server-blobs")
        store.put(b"a blob")
        stats = serve_blobs(server, store)
        stream = await client.open_stream(server.peer_id, PROTOCOL_ID)
        try:
            await write_frame(stream, b"\xa1\x61t\x6cblob_request")  # CBOR, but no version or hash
            with trio.fail_after(TIMEOUT), pytest.raises(EOFError):  # libp2p's StreamEOF: closed, no answer
                await read_frame(stream, 1024)
        finally:
            await stream.close()
        assert (stats.refused, stats.requests) == (1, 0)


async def test_fetch_from_any_skips_a_peer_without_the_blob_and_a_liar(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "empty", "liar", "holder") as (client, empty, liar, holder):
        empty_stats = serve_blobs(empty, BlobStore(tmp_path / "empty-blobs"))
        liar_requests = serve_answers(liar, claim(b"forged"))
        holder_store = BlobStore(tmp_path / "holder-blobs")
        holder_stats = serve_blobs(holder, holder_store)
        data = os.urandom(300_000)
        blob_sha = holder_store.put(data)

        store = BlobStore(tmp_path / "client-blobs")
        peers = [empty.peer_id, liar.peer_id, holder.peer_id]
        assert await fetch_from_any(client, peers, blob_sha, store, timeout=TIMEOUT) == data
        assert (empty_stats.not_found, len(liar_requests), holder_stats.served) == (1, 1, 1)
        assert store.get(blob_sha) == data

        # Now it is local: no peer is asked again.
        assert await fetch_from_any(client, peers, blob_sha, store, timeout=TIMEOUT) == data
        assert (empty_stats.requests, len(liar_requests), holder_stats.requests) == (1, 1, 1)


async def test_concurrent_fetches_of_one_blob_make_one_network_fetch(tmp_path: Path) -> None:
    async with open_hosts(tmp_path, "client", "server") as (client, server):
        server_store = BlobStore(tmp_path / "server-blobs")
        stats = serve_blobs(server, server_store)
        data = os.urandom(2 * MiB)
        blob_sha = server_store.put(data)
        store = BlobStore(tmp_path / "client-blobs")
        results: list[bytes] = []

        async def fetch() -> None:
            results.append(await fetch_from_any(client, [server.peer_id], blob_sha, store, timeout=TIMEOUT))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(fetch)
        assert results == [data] * 4
        assert stats.requests == 1


async def test_a_failed_fetch_lets_the_next_caller_try_its_own_peers(tmp_path: Path) -> None:
    content = b"only the holder has it"
    blob_sha = sha(content)
    asked, release = trio.Event(), trio.Event()
    events: list[str] = []

    async def slowly_not_found(request: BlobRequest, stream: Any) -> None:
        asked.set()
        await release.wait()
        events.append("empty answered")
        await write_frame(stream, encode(BlobResponse(sha256=request.sha256, size=0, found=False)))

    async def honestly(request: BlobRequest, stream: Any) -> None:
        events.append("holder asked")
        await claim(content)(request, stream)

    async with open_hosts(tmp_path, "client", "empty", "holder") as (client, empty, holder):
        serve_answers(empty, slowly_not_found)
        serve_answers(holder, honestly)
        store = BlobStore(tmp_path / "client-blobs")
        outcomes: dict[str, object] = {}

        async def fetch(name: str, peers: list[PeerId]) -> None:
            try:
                outcomes[name] = await fetch_from_any(client, peers, blob_sha, store, timeout=TIMEOUT)
            except PeerUnavailableError as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, "unlucky", [empty.peer_id])
            with trio.fail_after(TIMEOUT):
                await asked.wait()  # the unlucky fetch is in flight
            nursery.start_soon(fetch, "lucky", [holder.peer_id])
            await trio.sleep(0.2)  # without the wait for the fetch in flight, the lucky one would finish now
            release.set()
        assert isinstance(outcomes["unlucky"], PeerUnavailableError)
        assert outcomes["lucky"] == content
        assert store.get(blob_sha) == content
        assert events == ["empty answered", "holder asked"]
