"""The hello protocol: on every new connection, each side hands the other its presence and the peers it knows.

A peer is heard the moment it connects, not at its next heartbeat (presence is
published rarely: core/presence.py), and a newcomer knows the whole mesh from
one bootstrap connection: the hints are the signed presences of the peers the
sender is connected to, each checked here as if it came from its own peer, so
the newcomer lists them at once and dials them in its own time. Before, hints
were addresses only, and a peer was listed once a connection to it had been set
up: at 50 nodes on 2 cores, the 1,225 connections took minutes, and so did the
tables.

One stream per hello, two frames: the sender's signed ``Presence`` (it must be
the remote peer's own, the one Noise authenticated), then ``PeerHints``.
Anything else is refused and counted as ``hello_<reason>``; the node carries on.
A hinted presence that is not signed by the peer it names is refused alone
(``hello_bad_hint``), and the rest of the hints are taken; one not newer than
what the node has of that peer is skipped before its signature is checked. A hello
stream that ends before its first frame is counted as ``hello_abandoned`` and logged at debug
level only: that is what a sender that gave up waiting for the stream leaves (it tries again),
and 50 nodes starting on 2 cores left 113 of them, each a warning before.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from ..core import wire
from ..core.peer_id import PeerId
from ..core.presence import MAX_SIGNED_PRESENCE, PeerHints, Presence
from ..errors import FrameError, WireError
from .host import MeshHost
from .refusals import Refusals
from .streams import read_request, write_frame

__all__ = ["HELLO_PROTOCOL", "send_hello", "serve_hello"]

log = logging.getLogger(__name__)

HELLO_PROTOCOL: Final = "/meshnode/hello/1.0.0"
HELLO_TIMEOUT: Final = 10.0  # opening the stream; 5 s was too short for 50 nodes starting on 2 cores


async def send_hello(host: MeshHost, peer: PeerId, presence: bytes, hints: PeerHints) -> None:
    """Send our signed presence and our hints (signed presences of others) to ``peer``.

    Raises:
        PeerUnavailableError: the stream could not be opened.
        Exception: whatever libp2p raises when the stream breaks (the caller logs it).
    """
    stream = await host.open_stream(peer, HELLO_PROTOCOL, timeout=HELLO_TIMEOUT)
    try:
        await write_frame(stream, presence)
        await write_frame(stream, wire.encode(hints))
    finally:
        await stream.close()


def serve_hello(
    host: MeshHost,
    on_presence: Callable[[Presence, bytes], None],
    seq_of: Callable[[PeerId], int],
    dropped: Counter[str],
) -> None:
    """Answer hellos: ``on_presence`` gets the sender's verified presence, then each hinted one that is
    news (newer than ``seq_of`` its peer), with the signed envelope it came in."""
    refusals = Refusals(dropped, "hello")

    async def serve(remote: PeerId, stream: Any) -> None:
        try:
            data = await read_request(stream, MAX_SIGNED_PRESENCE)
            presence = wire.open_signed(data, remote, Presence)
            if presence.peer_id != remote:
                raise WireError(f"a presence of {presence.peer_id}, not of the sender")
        except FrameError as exc:
            if exc.reason == "closed":
                dropped["hello_abandoned"] += 1
                log.debug("a hello from %s ended before its presence (the sender gave up; it tries again)", remote)
            else:
                refusals.refuse("bad_presence", remote, str(exc))
            return
        except WireError as exc:
            refusals.refuse("bad_presence", remote, str(exc))
            return
        on_presence(presence, data)
        try:
            hints = wire.decode(await read_request(stream, wire.max_size(PeerHints)), PeerHints)
        except (FrameError, WireError) as exc:
            refusals.refuse("bad_hints", remote, str(exc))
            return
        for signed in hints.presences:
            try:
                hinted = _news(signed, seq_of)
            except WireError as exc:
                refusals.refuse("bad_hint", remote, str(exc))
                continue
            if hinted is not None:
                on_presence(hinted, signed)

    host.set_stream_handler(HELLO_PROTOCOL, serve)


def _news(signed: bytes, seq_of: Callable[[PeerId], int]) -> Presence | None:
    """The hinted presence in ``signed`` if it is newer than what we have of its peer, its signature checked."""
    body = wire.decode(wire.decode(signed, wire.Signed).body, Presence)
    if body.seq <= seq_of(body.peer_id):
        return None  # known already: no signature to check
    return wire.open_signed(signed, body.peer_id, Presence)
