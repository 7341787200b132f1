"""What a node tells the mesh about itself, over gossip: presence and goodbye.

Every node publishes a signed ``Presence`` every 1 to 2 s and whenever it
changes, and a ``Goodbye`` when it stops, so that peers drop it at once rather
than waiting for a timeout. ``seq`` grows with every message a node sends
(``max(previous + 1, unix ms)``, so it keeps growing across restarts) and a
receiver ignores anything not newer than what it has.
"""

from __future__ import annotations

from .peer_id import PeerId
from .wire import Float, Int, ListOf, Nested, Peer, Str, message, struct, wire

__all__ = ["Goodbye", "Gpu", "Presence", "next_seq"]

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
    interval_ms: int = wire(Int(100, 60_000))  # how often this node publishes: peers time it out by this
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


def next_seq(previous: int, now_ms: int) -> int:
    """A sequence number after ``previous`` that also outgrows any from an earlier run."""
    return max(previous + 1, now_ms)
