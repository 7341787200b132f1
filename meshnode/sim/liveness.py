"""Who a simulated node thinks has left the mesh: a real peer table at each job owner, a timer at the others.

Theory of operation:

*Owners.* A job owner runs the core's ``PeerTable``, fed what a real node's
would be: a presence (a hello) from every peer it connects to, a connection
that closes ``DETECT_SECONDS`` after its peer crashed or a partition cut it,
connections and hellos again when the peer restarts or the partition heals, and
a tick every quarter second. Its instructions are carried out here, every kind
of them: a dial succeeds a round trip later if the peer can be reached and
fails otherwise; a dropped connection closes; ``PeerGone`` goes to the owner
(``gone``), which gives the peer's leases back (``PeerLeft``) and drops the
work it stole from it (``OwnerLeft``), as ``node/mesh_node.py`` does.

*Everyone else.* A table per peer for a thousand peers is a million records
ticked four times a second; a thief needs its table only to learn that an
owner it holds work from has gone. So a peer without jobs of its own is told
``OwnerLeft`` by a timer instead (``watch``): ``DETECT_SECONDS`` plus
``GONE_SECONDS`` after it lost the owner, if it still cannot reach it then -
the time a table takes to call a lost connection gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..core.peers import (
    GONE_INTERVALS, LOST_UNIT, ConnectionChanged, DialFailed, DialPeer, DropConnection, Instruction, PeerGone,
    PeerJoined, PeerReachable, PeerStale, PeerTable, PeerUnreachable, PresenceHeard, Tick,
)  # fmt: skip
from .world import World, unknown

__all__ = ["DETECT_SECONDS", "GONE_SECONDS", "OwnerTable"]

DETECT_SECONDS: Final = 1.0  # from a crash or a cut to the connection closing at the other end
GONE_SECONDS: Final = GONE_INTERVALS * LOST_UNIT  # from a closed connection to the table calling the peer gone


class OwnerTable:
    """The peer table of job owner ``me``, and its driver.

    Args:
        world: the simulation.
        me: the owner's number.
        gone: called with a peer's number when the table says it left.
        epoch: the owner's incarnation (the table dies with it).
    """

    __slots__ = ("_alive", "epoch", "gone", "label", "me", "table", "world")

    def __init__(self, world: World, me: int, gone: Callable[[int], None], epoch: int) -> None:
        self.world, self.me, self.gone, self.epoch = world, me, gone, epoch
        self.label = f"peer {me}"
        self.table = PeerTable(world.ids[me])
        self._alive: int | None = 0  # alive peers in the table; None: to count again

    def alive_count(self) -> int:
        """How many peers the table holds alive (counted again only after it changed)."""
        if self._alive is None:
            self._alive = sum(1 for r in self.table.peers.values() if r.state == "alive")
        return self._alive

    def live(self) -> bool:
        return self.world.net.nodes[self.me].epoch == self.epoch

    def meet(self, peer: int) -> None:
        """A connection to ``peer`` opened, and its hello came."""
        w = self.world
        now = w.clock.now
        self._apply(self.table.handle(ConnectionChanged(w.ids[peer], True, now)))
        presence = w.presence(peer, w.directory.surplus[peer], w.directory.idle[peer])
        self._apply(self.table.handle(PresenceHeard(presence, now)))

    def lose(self, peer: int) -> None:
        """The connection to ``peer`` closed (unless it can be reached again by now: a new one opened)."""
        if self.live() and not self.world.net.reachable(self.me, peer):
            self._apply(self.table.handle(ConnectionChanged(self.world.ids[peer], False, self.world.clock.now)))

    def tick(self) -> None:
        self._apply(self.table.handle(Tick(self.world.clock.now)))

    def _apply(self, instructions: list[Instruction]) -> None:
        """The one place the table's instructions are carried out."""
        w = self.world
        for i in instructions:
            match i:
                case PeerGone():
                    self.gone(w.index_of[i.peer])
                case DialPeer():
                    peer = w.index_of[i.peer]
                    w.clock.after(2 * w.net.base_latency(self.me, peer), self._dialled, peer)
                case DropConnection():
                    peer = w.index_of[i.peer]
                    self._apply(self.table.handle(ConnectionChanged(i.peer, False, w.clock.now)))
                case PeerJoined() | PeerStale() | PeerUnreachable() | PeerReachable():
                    pass  # the real node logs these
                case _:
                    unknown(i)
        self._alive = None

    def _dialled(self, peer: int) -> None:
        if not self.live():
            return
        if self.world.net.reachable(self.me, peer):
            self.meet(peer)
        else:
            self._apply(self.table.handle(DialFailed(self.world.ids[peer], "no route", self.world.clock.now)))
