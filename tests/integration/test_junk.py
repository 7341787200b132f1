"""Junk on a running node's streams: each kind refused with a one-line reason, counted, and the node serves on.

A rogue host (plain ``open_host``: no peer table, no manners) opens real libp2p
streams to the node over loopback and writes what a broken or hostile peer
might: nothing, a frame cut short, a 4 GB length prefix, bytes that are not
CBOR, a meshnode message of the wrong kind, and a gossip frame over 1 MiB.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from meshnode.core import wire
from meshnode.core.blob_messages import BlobRequest
from meshnode.core.job_messages import StealAsk
from meshnode.core.presence import PeerHints
from meshnode.net import blob_protocol, hello, job_protocol
from meshnode.net.host import MeshHost, open_host
from meshnode.node.mesh_node import MeshNode, open_node
from meshnode.sandbox.runtime import ENGINE_ID
from meshnode.storage.identity import load_or_create_identity

from ..waiting import wait_until
from .conftest import node_config

def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


JUNK = {
    "empty": b"",
    "truncated": struct.pack(">I", 100) + b"only ten b",
    "oversize": struct.pack(">I", 0xFFFF_FFFF) + b"\x00" * 64,  # a 4 GB frame announced
    "malformed": frame(b"\x00\xffnot cbor at all"),
}


WRONG_TYPE = {  # a well-formed meshnode message, of a kind the protocol does not take
    job_protocol.PROTOCOL_ID: frame(wire.encode(BlobRequest(sha256=b"\x01" * 32))),
    blob_protocol.PROTOCOL_ID: frame(wire.encode(StealAsk(request_id=1, n=1, engine="e", queued=0, runtimes=("wasm",)))),
}


@asynccontextmanager
async def node_and_rogue(root: Path) -> AsyncIterator[tuple[MeshNode, MeshHost]]:
    async with open_node(node_config(root, "node")) as node:
        async with open_host(load_or_create_identity(root / "rogue"), ["/ip4/127.0.0.1/tcp/0"]) as rogue:
            await rogue.dial(node.peer_id, node.host.listen_addrs)
            yield node, rogue


async def send(rogue: MeshHost, node: MeshNode, protocol: str, data: bytes) -> None:
    stream = await rogue.open_stream(node.peer_id, protocol)
    if data:
        await stream.write(data)
    await stream.close()


async def still_serves(node: MeshNode, rogue: MeshHost) -> None:
    """A well-formed steal and a well-formed blob fetch are answered as ever."""
    with trio.fail_after(10):
        reply = await job_protocol.JobClient(rogue).steal(node.peer_id, 1, 1, ENGINE_ID)
        assert reply.request_id == 1 and reply.grants == ()
        sha = node.jobs.blobs.put(b"still here")
        assert await blob_protocol.fetch_blob(rogue, node.peer_id, sha, max_size=1024, timeout=5) == b"still here"


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "meshnode.net.refusals"]


@pytest.mark.parametrize("protocol", [job_protocol.PROTOCOL_ID, blob_protocol.PROTOCOL_ID])
async def test_every_kind_of_junk_is_refused_with_a_reason_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshnode.net.refusals")
    prefix = "jobs" if protocol == job_protocol.PROTOCOL_ID else "blob"
    async with node_and_rogue(tmp_path) as (node, rogue):
        for reason, data in [*JUNK.items(), ("wrong_type", WRONG_TYPE[protocol])]:
            key = f"{prefix}_{reason}"
            await send(rogue, node, protocol, data)
            await wait_until(lambda: node.info()["dropped_messages"].get(key) == 1, 10, f"{key} to be counted")
        await still_serves(node, rogue)
        assert {k: v for k, v in node.info()["dropped_messages"].items() if k.startswith(prefix)} == {
            f"{prefix}_{reason}": 1 for reason in [*JUNK, "wrong_type"]
        }  # fmt: skip
    lines = refusal_lines(caplog)
    assert len(lines) == 5
    for record in lines:
        message = record.getMessage()
        assert "\n" not in message and str(rogue.peer_id) in message
        assert message.split(": ", 1)[1].split(" (")[0].strip(), message  # a reason, never empty
    # one warning, then debug only: a peer sending junk in a loop cannot flood the log
    assert [r.levelno for r in lines] == [logging.WARNING] + [logging.DEBUG] * 4


async def test_an_oversize_gossip_frame_is_counted(tmp_path: Path) -> None:
    from libp2p.utils.varint import encode_uvarint

    async with node_and_rogue(tmp_path) as (node, rogue):
        await send(rogue, node, "/meshsub/1.1.0", encode_uvarint(2 << 20) + b"\x00" * 1024)
        await wait_until(
            lambda: node.info()["dropped_messages"].get("gossip_oversize_frame") == 1, 10, "the frame to be counted"
        )  # fmt: skip
        await still_serves(node, rogue)


def smaller_first(root: Path, *names: str) -> None:
    """Create the keys of ``names`` in ``root`` so that their peer IDs sort in that order: of two peers
    that learn of each other, the smaller dials at once and the other only after ``DIAL_GRACE``."""
    made = sorted((load_or_create_identity(root / f"key-{i}").peer_id, i) for i in range(len(names)))
    for name, (_, i) in zip(names, made, strict=True):
        (root / f"key-{i}").rename(root / name)


async def test_a_bad_hello_is_refused_and_counted_and_a_good_ones_hints_are_listed_and_dialled(tmp_path: Path) -> None:
    smaller_first(tmp_path, "node", "third")  # the node dials the hinted peer at once, not after the grace
    async with node_and_rogue(tmp_path) as (node, rogue), open_node(node_config(tmp_path, "third")) as third:
        other = load_or_create_identity(tmp_path / "other")
        presence = node._presence()  # a valid presence body, to forge from
        fields = {f: getattr(presence, f) for f in presence.__dataclass_fields__}
        rogue_key = load_or_create_identity(tmp_path / "rogue").signing_key
        mine = wire.sign(type(presence)(**{**fields, "peer_id": rogue.peer_id}), rogue_key)
        not_mine = wire.sign(type(presence)(**{**fields, "peer_id": other.peer_id}), other.signing_key)
        bad = {
            "hello_abandoned": [JUNK["empty"]],  # what a sender that gave up leaves: counted, logged at debug level
            "hello_bad_presence": [JUNK["truncated"], JUNK["oversize"], JUNK["malformed"], frame(not_mine)],
            "hello_bad_hints": [frame(mine) + JUNK["malformed"]],
        }
        for key, payloads in bad.items():
            for data in payloads:
                await send(rogue, node, hello.HELLO_PROTOCOL, data)
        counted = {key: len(payloads) for key, payloads in bad.items()}
        await wait_until(
            lambda: {k: node.info()["dropped_messages"].get(k) for k in counted} == counted, 10, "the bad hellos to be counted"
        )  # fmt: skip
        assert rogue.peer_id in node.table.peers  # its own presence, before the bad hints, was taken
        assert other.peer_id not in node.table.peers
        await still_serves(node, rogue)
        # a good hello's hints: the signed presences of peers the node did not know, each listed at once and
        # dialled; one that nobody runs is listed too (alive until its silence says otherwise, as by gossip),
        # and one not signed by the peer it names is refused alone
        assert third.peer_id not in node.table.peers
        absent = load_or_create_identity(tmp_path / "absent")
        nowhere = {**fields, "peer_id": absent.peer_id, "addrs": ("/ip4/127.0.0.1/tcp/9",)}
        forged = wire.sign(type(presence)(**{**fields, "peer_id": other.peer_id}), rogue_key)
        hints = PeerHints((third._signed_presence(), forged, wire.sign(type(presence)(**nowhere), absent.signing_key)))
        await send(rogue, node, hello.HELLO_PROTOCOL, frame(mine) + frame(wire.encode(hints)))
        await wait_until(lambda: node.host.is_connected(third.peer_id), 10, "the node to dial the hinted peer")
        record = node.table.peers[absent.peer_id]
        assert record.state == "alive" and not record.connected
        assert other.peer_id not in node.table.peers
        assert node.info()["dropped_messages"].get("hello_bad_hint") == 1
