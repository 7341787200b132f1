"""The presence topic: signed ``Presence`` and ``Goodbye`` messages over gossipsub.

gossipsub already signs each message with the origin's key (strict signing);
on top of that the body is a meshnode signed envelope, so a presence forwarded
or stored anywhere still proves who wrote it. A validator checks every message
before gossipsub delivers or forwards it: anything malformed, oversize,
wrongly signed or naming another peer than its origin is dropped, counted, and
never reaches a peer behind us. A gossip frame over libp2p's 1 MiB limit never
reaches the validator (libp2p resets the stream first); it is counted as
``gossip_oversize_frame`` all the same.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Final

from ..core import wire
from ..core.peer_id import PeerId
from ..core.presence import Goodbye, Presence
from ..errors import WireError
from ..storage.identity import Identity
from .host import MeshHost
from .refusals import Refusals

__all__ = ["PRESENCE_TOPIC", "PresenceGossip"]

log = logging.getLogger(__name__)

PRESENCE_TOPIC: Final = "meshnode/presence/1"
_MAX_BYTES: Final = 8192 + 256


class PresenceGossip:
    """Publish our presence; yield the peers' (already verified) presence and goodbyes."""

    def __init__(self, host: MeshHost, identity: Identity, dropped: Counter[str]) -> None:
        self._host = host
        self._identity = identity
        self.dropped = dropped
        self._verified: dict[tuple[bytes, bytes], Presence | Goodbye] = {}
        self._subscription: Any = None
        self.received = 0  # peers' messages that reached the validator, valid or not
        self._own_id = identity.peer_id.to_bytes()

    async def start(self) -> None:
        refusals = Refusals(self.dropped, "gossip", what="a gossip frame")
        self._host.watch_oversize_gossip(
            lambda peer: refusals.refuse("oversize_frame", peer, "over the 1 MiB limit (libp2p reset the stream)")
        )
        self._host.pubsub.set_topic_validator(PRESENCE_TOPIC, self._validate, False)
        self._subscription = await self._host.pubsub.subscribe(PRESENCE_TOPIC)

    def links(self) -> dict[str, int]:
        """How gossip reaches this node: peers pubsub has a stream to, peers it knows are on the presence
        topic, and peers in its gossip mesh for it (all 0 with connections open: gossip is broken here)."""
        pubsub = self._host.pubsub
        return {
            "streams": len(pubsub.peers),
            "topic_peers": len(pubsub.peer_topics.get(PRESENCE_TOPIC, ())),
            "mesh": self.mesh_size(),
            "received": self.received,
        }

    def mesh_size(self) -> int:
        """Peers in this node's gossip mesh for the presence topic."""
        return len(getattr(self._host.pubsub.router, "mesh", {}).get(PRESENCE_TOPIC, ()))

    def _check(self, msg: Any) -> Presence | Goodbye:
        data = msg.data
        if len(data) > _MAX_BYTES:
            raise WireError("oversize")
        origin = PeerId(bytes(msg.from_id))
        env = wire.decode(data, wire.Signed)
        body: object = wire.decode(env.body)
        if not isinstance(body, (Presence, Goodbye)):
            raise WireError(f"a {type(body).__name__} on the presence topic")
        if body.peer_id != origin:
            raise WireError(f"message from {origin} speaks for {body.peer_id}")
        wire.open_signed(data, origin, type(body))  # the signature, against the origin's key
        return body

    def _validate(self, forwarder: Any, msg: Any) -> bool:
        if bytes(msg.from_id) != self._own_id:  # libp2p validates what we publish too
            self.received += 1
            self._host.traffic["gossip", "received"] += len(msg.data)
        try:
            body = self._check(msg)
        except WireError as exc:
            reason = _reason(str(exc))
            self.dropped[reason] += 1
            log.debug("dropped a presence message (%s): %s", reason, exc)
            return False
        if len(self._verified) > 10_000:  # never grows unbounded if delivery stalls
            self._verified.clear()
        self._verified[(bytes(msg.from_id), bytes(msg.seqno))] = body
        return True

    async def publish(self, message: Presence | Goodbye | bytes) -> None:
        """Publish a message, or one already signed by this node (a signed envelope)."""
        signed = message if isinstance(message, bytes) else wire.sign(message, self._identity.signing_key)
        await self._host.pubsub.publish(PRESENCE_TOPIC, signed)
        self._host.traffic["gossip", "sent"] += len(signed)

    async def messages(self) -> AsyncIterator[tuple[Presence | Goodbye, bytes]]:
        """Every valid presence or goodbye, ours included (the caller ignores its own), with its signed envelope."""
        while True:
            msg = await self._subscription.get()
            body: Presence | Goodbye | None = self._verified.pop((bytes(msg.from_id), bytes(msg.seqno)), None)
            if body is None:
                try:
                    body = self._check(msg)
                except WireError:
                    continue
            yield body, bytes(msg.data)


def _reason(message: str) -> str:
    if message == "oversize" or "over the" in message:
        return "oversize"
    if "bad signature" in message:
        return "bad_signature"
    if "speaks for" in message:
        return "wrong_origin"
    return "malformed"
