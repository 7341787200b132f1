"""A deterministic simulator of the mesh: the real core state machines of N peers on virtual time.

Theory of operation:

Every simulated peer runs the core's own ``Thief``, ``JobOwner`` (with its
``Tally`` and ``judge``), ``Reputation``, steal planning, credit grants and, at
job owners, ``PeerTable``, driven as the real node drives them but on a heap of
virtual-time events instead of trio, sockets and a sandbox (``peer.py``,
``owning.py``, ``liveness.py``). Around them the simulator models what the real
node leaves to the world: a network with latency, jitter, loss, reordering and
partitions (``network.py``), presence gossip (``directory.py``), runs that take
time and produce a subtask's true result or a byzantine peer's lie
(``behaviour.py``), crashes that throw a node's memory away and restarts that
rebuild it from what its journal holds. ``scenario.py`` says what is injected;
``invariants.py`` checks the rules at every commit and at the end;
``report.py`` is what a run measured.

One seed gives one run: every draw comes from one ``random.Random(seed)`` in
event order, events at the same time run in the order they were scheduled, and
nothing reads the wall clock or depends on hash order, so a failure replays
exactly with the command it prints. Run it as ``python -m meshnode.sim``
(docs/simulator.md).

This is a development tool, not part of a node: nothing in meshnode imports it.
"""

from __future__ import annotations

from .report import Report
from .scenario import Scenario, mixed
from .simulation import simulate

__all__ = ["Report", "Scenario", "mixed", "simulate"]
