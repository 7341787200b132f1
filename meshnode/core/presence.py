"""What a node tells the mesh about itself: presence, goodbye, and the peers it knows.

A node publishes a signed ``Presence`` over gossip when something its peers act
on changes (work to steal appears or runs out, its slots, its runtimes), and
otherwise only as a slow heartbeat (``NodeConfig.presence_interval``, longer in
large meshes); it also hands one to each peer it connects to, together with
``PeerHints``: the signed presences of the peers it is connected to, so a
newcomer knows the whole mesh from one connection, before it has dialled the
rest. Liveness comes from the connections themselves (core/peers.py), not from
the presence stream. A ``Goodbye`` when a node stops makes peers drop it at once
rather than waiting for a timeout. ``seq`` grows with every message a node sends
(``max(previous + 1, unix ms)``, so it keeps growing across restarts) and a
receiver ignores anything not newer than what it has.
"""

from __future__ import annotations

from .peer_id import PeerId
from .wire import Bytes, Float, Int, ListOf, Nested, Peer, Str, message, struct, wire

__all__ = ["MAX_HINTS", "MAX_SIGNED_PRESENCE", "Goodbye", "Gpu", "PeerHints", "Presence", "heartbeat_interval", "next_seq"]

_ADDR = Str(256, pattern=r"/[ -~]*")  # a multiaddr in text form, printable ASCII


@struct
class Gpu:
    name: str = wire(Str(200))
    memory: int = wire(Int(0, 2**50))  # bytes


@message("presence", version=1, max_size=8192)
class Presence:
    """A node's capacity and health, as it advertises them."""

    peer_id: PeerId = wire(Peer())
    seq: int = wire(Int(0, 2**62))
    interval_ms: int = wire(Int(100, 600_000))  # its heartbeat: a peer heard only through gossip is timed out by it
    addrs: tuple[str, ...] = wire(ListOf(_ADDR, 16))
    version: str = wire(Str(32))
    engine: str = wire(Str(64))  # wasmtime version and CPU architecture: replicas are matched on it
    runtimes: tuple[str, ...] = wire(ListOf(Str(64), 8))  # the task runtimes ready here: "wasm", a Python runtime's ID
    slots: int = wire(Int(0, 4096))
    idle: int = wire(Int(0, 4096))
    surplus: int = wire(Int(0, 2**31))  # subtasks it could give away to thieves
    load1: float = wire(Float(0.0, 1e6))
    mem_free: int = wire(Int(0, 2**60))
    mem_total: int = wire(Int(0, 2**60))
    cpu: str = wire(Str(200))
    gpus: tuple[Gpu, ...] = wire(ListOf(Nested(Gpu), 16))

    def check(self) -> str | None:
        if self.idle > self.slots:
            return f"idle {self.idle} is more than slots {self.slots}"
        return None


@message("goodbye", version=1, max_size=256)
class Goodbye:
    """The node is stopping: drop it now."""

    peer_id: PeerId = wire(Peer())
    seq: int = wire(Int(0, 2**62))


MAX_HINTS = 64
MAX_HEARTBEAT = 600.0  # seconds: the most ``Presence.interval_ms`` can say
MESH_HEARTBEATS = 5  # heartbeats the whole mesh publishes per base interval, whatever its size


MAX_SIGNED_PRESENCE = 8192 + 256  # a presence in its signed envelope


@message("peer_hints", version=2, max_size=MAX_HINTS * (MAX_SIGNED_PRESENCE + 8) + 64)
class PeerHints:
    """The latest signed presence of each peer the sender lists alive (up to ``MAX_HINTS``).

    Each is signed by the peer it describes, so the receiver checks it as it would the
    peer's own gossip and lists the peer at once; a hint cannot make up a peer. Nodes
    connect to a few peers only (``core.peers.CONNECTION_DEGREE``), so a newcomer's table
    fills from its first hello: connected or not, a peer the sender lists alive was heard
    from within three of its heartbeats (or is connected), and one whose connection to
    the sender closed is alive there for three seconds at most.
    """

    presences: tuple[bytes, ...] = wire(ListOf(Bytes(1, MAX_SIGNED_PRESENCE), MAX_HINTS))


def heartbeat_interval(base: float, peers: int) -> float:
    """Seconds between two presence heartbeats of one node in a mesh of ``peers`` others.

    ``base`` up to ``MESH_HEARTBEATS`` peers, then longer in proportion (at most
    ``MAX_HEARTBEAT``): the whole mesh publishes about ``MESH_HEARTBEATS`` heartbeats per
    ``base``, so the gossip each node receives and forwards does not grow with the mesh.
    Measured on a 20-node LAN with a 30 s heartbeat (one mesh-wide every 1.5 s): 16 KB/s per
    idle node, mostly presence copies through the gossip mesh. Nothing waits for a heartbeat:
    liveness comes from the connections, changes are published at once, and a new
    connection gets a hello.
    """
    return min(MAX_HEARTBEAT, max(base, base * peers / MESH_HEARTBEATS))


def next_seq(previous: int, now_ms: int) -> int:
    """A sequence number after ``previous`` that also outgrows any from an earlier run."""
    return max(previous + 1, now_ms)
