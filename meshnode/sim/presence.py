"""When a simulated node publishes its presence: as ``MeshNode._tick`` and ``MeshNode._publish_presence`` decide.

Theory of operation:

A real node looks at its surplus at every tick (a quarter second while one of
its jobs runs, a second otherwise) and calls it a change when whether it has
any differs from the last tick's; replicas added to a job (``work_added``) and
a new job are changes too, and so is a surplus above the least it has been since
a steal answer told a thief nothing was left for it (``nothing_left``: work came
back, news for that thief), at most every ``WAITING_NEWS_GAP``. Its publisher then:

    when                                               publishes
    -------------------------------------------------  ----------------------------
    a change, more than ``CHANGE_GAP`` after the last  at once
    a change within the gap: a new job, work back for  at once
    a waiting thief, or work where the last presence
    offered none
    any other change within the gap                    when the gap ends
    no change                                          a heartbeat later (jittered)

A change undone before the next tick is never seen, so never told. A job
owner's tick is simulated (``sample``, called from it); for other nodes, the
tick is sampled only when something happened that changed the surplus
(``poke``): a tick that would see the same as the last one changes nothing, so
it need not run. Publications land in the ``Directory``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from ..core.presence import heartbeat_interval
from .world import World

__all__ = ["CHANGE_GAP", "WAITING_NEWS_GAP", "Publisher"]

CHANGE_GAP: Final = 0.5  # presence changes closer together than this go out in one message
WAITING_NEWS_GAP: Final = 1.0  # work back for a waiting thief is told at most this often (node/mesh_node.py)
PRESENCE_INTERVAL: Final = 30.0  # the node's default base heartbeat (config.presence_interval)


class Publisher:
    """The presence publisher of one incarnation of one node.

    Args:
        world: the simulation.
        peer: the node's number.
        surplus: what the node could give away now.
        idle: its idle slots now.
        tick: its tick interval now.
    """

    __slots__ = ("_beat", "_changed", "_gap_due", "_offered", "_published_at", "_sample_due", "_sampled",
                 "_waiting_below", "_waiting_told", "epoch", "idle", "label", "peer", "surplus", "tick", "world")  # fmt: skip

    def __init__(
        self, world: World, peer: int, surplus: Callable[[], int], idle: Callable[[], int], tick: Callable[[], float]
    ) -> None:  # fmt: skip
        self.world, self.peer = world, peer
        self.label = f"peer {peer}"
        self.epoch = world.net.nodes[peer].epoch
        self.surplus, self.idle, self.tick = surplus, idle, tick
        self._sampled = 0  # the surplus the last tick saw
        self._sample_due = False
        self._waiting_below: int | None = None  # thieves told nothing is left wait for a surplus above this
        self._waiting_told = -math.inf  # when they were last told of work
        self._published_at = -math.inf
        self._offered = False  # the last presence offered work
        self._changed = False  # a change waits for the gap to end
        self._gap_due = False
        self._beat = 0  # the heartbeat under way

    def _live(self) -> bool:
        return self.world.net.nodes[self.peer].epoch == self.epoch

    def poke(self) -> None:
        """Something happened: if it changed the surplus, the next tick will see it."""
        if not self._sample_due and self.surplus() != self._sampled:
            self._sample_soon(self.world.clock.now)

    def _sample_soon(self, after: float) -> None:
        self._sample_due = True
        t = self.tick()
        self.world.clock.at((math.floor(after / t) + 1) * t, self._sample)

    def nothing_left(self) -> None:
        """A steal answer told a thief nothing is left for it (``MeshNode._told_nothing_left``)."""
        surplus = self.surplus()
        self._waiting_below = surplus if self._waiting_below is None else min(self._waiting_below, surplus)

    def _sample(self) -> None:
        if self._live():
            self.sample()

    def sample(self) -> None:
        """A tick looks at the surplus (a node with a tick of its own calls this from it)."""
        self._sample_due = False
        now, surplus, last = self.world.clock.now, self.surplus(), self._sampled
        told = False
        if self._waiting_below is not None:
            if surplus <= self._waiting_below:
                self._waiting_below = surplus
            elif now - self._waiting_told >= WAITING_NEWS_GAP:
                self._waiting_below, self._waiting_told, told = None, now, True
                self.change(new_work=True)
            elif not self._sample_due:  # the real tick looks again after the gap
                self._sample_soon(self._waiting_told + WAITING_NEWS_GAP - 1e-9)
        if not told and (surplus > 0) != (last > 0):
            self.change()
        self._sampled = surplus

    def change(self, new_work: bool = False) -> None:
        """What peers act on changed (``_presence_changed``); ``new_work``: a job was submitted."""
        now = self.world.clock.now
        if now >= self._published_at + CHANGE_GAP or new_work or (not self._offered and self.surplus() > 0):
            self.publish()
        elif not self._gap_due:
            self._changed = self._gap_due = True
            self.world.clock.at(self._published_at + CHANGE_GAP, self._gap_end)
        else:
            self._changed = True

    def _gap_end(self) -> None:
        self._gap_due = False
        if self._live() and self._changed:
            self.publish()

    def publish(self) -> None:
        w = self.world
        surplus = self.surplus()
        w.directory.publish(self.peer, surplus, self.idle())
        self._published_at, self._offered, self._changed = w.clock.now, surplus > 0, False
        self._beat += 1
        beat = heartbeat_interval(PRESENCE_INTERVAL, len(w.ids) - 1) * w.rng.uniform(5 / 6, 7 / 6)
        w.clock.after(CHANGE_GAP + beat, self._heartbeat, self._beat)

    def _heartbeat(self, beat: int) -> None:
        if self._live() and beat == self._beat:
            self.publish()
