"""Presence gossip, as the simulated peers see it: who offers work to steal, and who has idle slots.

Theory of operation:

A real node publishes a signed presence over gossip when whether it has
surplus changes (work appears, or runs out), and otherwise at a slow heartbeat;
every node keeps the latest it heard of each peer. Gossip reaches every peer
at about the same time, so the simulation keeps one directory for the whole
mesh instead of a copy per peer: a publication lands ``GOSSIP_DELAY`` after it
is sent, for everyone at once, and each reader sees only the peers it can
reach now (one it cannot reach would be dropped from its table soon enough).
That costs one event per publication instead of one per peer, which is what
lets a thousand peers run.

What a thief reads is the ``MAX_VICTIMS`` reachable peers offering the most.
A real thief is handed every alive peer and picks the one offering the most
among those it does not back off from (``core/steal.py``), so it picks the
same one unless all of those are backed off from; the cap keeps a look at the
mesh from costing a scan of a thousand peers.

A peer that is heard of again after a thief's last steal answer from it is
reported to that thief, as a real node reports a presence newer than a steal
answer (``PresenceHeard``).

A real node's stealer wakes at once when a presence offering work arrives, and
otherwise looks again every half second. A thief that found no peer offering
anything it can reach waits (``wait``) instead of looking every half second:
a publication offering work wakes every waiting thief at once, as the real
presence does, and so does a change of who can reach whom (``wake_all``).
Looking in between would find the same nothing; at a thousand peers, at the
end of a job, those looks were most of the simulation's time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Final

from .clock import Clock

__all__ = ["GOSSIP_DELAY", "MAX_VICTIMS", "Directory"]

GOSSIP_DELAY: Final = 0.05  # seconds from a publication to every peer's table
MAX_VICTIMS: Final = 8


class Directory:
    """The mesh's presence, as gossip spreads it."""

    __slots__ = ("_offers", "_tops", "_waiting", "clock", "heard_at", "idle", "publications", "surplus", "version")

    def __init__(self, clock: Clock, peers: int) -> None:
        self.clock = clock
        self.surplus = [0] * peers  # as last published
        self.idle = [0] * peers
        self.heard_at = [-1.0] * peers  # when the last publication landed
        self._offers: list[tuple[int, int]] = []  # (-surplus, peer) of peers offering work, best first
        self.publications = 0
        self.version = 0  # grows with every publication that lands
        self._waiting: dict[int, Callable[[], None]] = {}  # thieves waiting for an offer: how to wake each
        self._tops: dict[int, tuple[tuple[int, int], list[tuple[int, int]]]] = {}  # by side: (versions, offers)

    def publish(self, peer: int, surplus: int, idle: int) -> None:
        self.publications += 1
        self.clock.after(GOSSIP_DELAY, self._land, peer, surplus, idle)

    def _land(self, peer: int, surplus: int, idle: int) -> None:
        old = self.surplus[peer]
        if old > 0:
            del self._offers[bisect.bisect_left(self._offers, (-old, peer))]
        if surplus > 0:
            bisect.insort(self._offers, (-surplus, peer))
        self.surplus[peer], self.idle[peer] = surplus, idle
        self.heard_at[peer] = self.clock.now
        self.version += 1
        if surplus > 0:
            self.wake_all()

    def wait(self, peer: int, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, when the next offer lands (or the topology changes)."""
        self._waiting[peer] = wake

    def wake_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for wake in waiting.values():
            wake()

    def offers(self, usable: Callable[[int], bool], limit: int = MAX_VICTIMS) -> list[tuple[int, int]]:
        """Up to ``limit`` (peer, surplus) offering the most, among the peers ``usable`` accepts."""
        out = []
        for neg, peer in self._offers:
            if usable(peer):
                out.append((peer, -neg))
                if len(out) >= limit:
                    break
        return out

    def offers_to(self, reader: int, side: int, usable: Callable[[int], bool], topology: int) -> list[tuple[int, int]]:
        """``offers`` for ``reader``, which can reach exactly the running peers on its ``side``.

        What one reader sees is what every reader on its side sees but itself, so the list is
        made once per side and kept until a publication lands or the topology changes.
        """
        versions = (self.version, topology)
        kept = self._tops.get(side)
        if kept is None or kept[0] != versions:
            kept = self._tops[side] = (versions, self.offers(usable, MAX_VICTIMS + 1))
        return [o for o in kept[1] if o[0] != reader][:MAX_VICTIMS]

    def any_idle(self, usable: Callable[[int], bool]) -> bool:
        """Whether some peer ``usable`` accepts said it has idle slots."""
        return any(idle > 0 and usable(peer) for peer, idle in enumerate(self.idle))
