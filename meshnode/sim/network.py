"""The simulated network: latency, jitter, loss, reordering and partitions between numbered peers.

Theory of operation:

A link's latency is the sum of its two ends' (each peer has its own distance
to the network's core, drawn by the plan) times a fixed factor of the pair, and
every message takes up to ``jitter`` of it longer, drawn per message. With
probability ``reorder`` a message is held back up to 20 latencies more, so it
overtakes nothing but is overtaken. Messages are delivered in the order their
arrival times give, which is how reordering shows.

A message is lost with probability ``loss``, and always when its two ends
cannot reach each other: one of them is down, or a partition puts them on
different sides. That is checked when it is sent and again when it arrives; a
message that arrives at a peer which crashed and restarted meanwhile is lost
too, as its connection was.

There are two kinds of message:

* ``send``: one way; nobody learns of a loss (a renewal, a revocation).
* ``call``: a request and its answer, as the job protocol's exchanges are. The
  caller hears exactly one of ``on_reply(answer)`` or ``on_fail()``. A peer it
  cannot reach refuses at once (a round trip later: no connection); a lost
  request or answer, or a callee that crashes before it answers, fails the call
  ``rpc_timeout`` after it was made. Nothing is heard by a caller that crashed
  meanwhile. A callee may answer later (``Call.deferred``), as a victim does
  while it asks an owner to move work.

Every message sent is counted by kind, lost or not.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from .clock import Clock

__all__ = ["Call", "Endpoint", "Handler", "Network"]

Handler = Callable[..., None]


class Endpoint(Protocol):
    """A peer as the network sees it: which incarnation of it is running (it grows with each crash)."""

    epoch: int


class Call:
    """One exchange under way. The callee answers it with ``answer``, once."""

    __slots__ = ("answered", "deferred", "done", "dst", "dst_epoch", "kind", "net", "on_fail", "on_reply", "sent",
                 "src", "src_epoch")  # fmt: skip

    def __init__(
        self, net: Network, src: int, dst: int, kind: str, on_reply: Callable[[object], None], on_fail: Callable[[], None]
    ) -> None:  # fmt: skip
        self.net, self.src, self.dst, self.kind = net, src, dst, kind
        self.src_epoch, self.dst_epoch = net.nodes[src].epoch, net.nodes[dst].epoch
        self.on_reply, self.on_fail = on_reply, on_fail
        self.sent = net.clock.now
        self.answered = self.deferred = self.done = False

    @property
    def label(self) -> str:
        return f"{self.kind} {self.src}->{self.dst}"

    def answer(self, result: object) -> None:
        self.net._answer(self, result)


class Network:
    """Messages between the peers ``nodes`` (numbered by their place in it)."""

    __slots__ = ("clock", "jitter", "latency", "loss", "lost", "nodes", "reorder", "rng", "rpc_timeout", "sent",
                 "side", "up", "version")  # fmt: skip

    def __init__(
        self, clock: Clock, rng: random.Random, nodes: Sequence[Endpoint], latency: Sequence[float],
        *, loss: float, jitter: float, reorder: float, rpc_timeout: float,
    ) -> None:  # fmt: skip
        self.clock, self.rng, self.nodes = clock, rng, nodes
        self.latency = list(latency)
        self.loss, self.jitter, self.reorder, self.rpc_timeout = loss, jitter, reorder, rpc_timeout
        self.up = [False] * len(latency)  # running now (the simulation keeps this)
        self.side = [0] * len(latency)  # partition side: peers reach each other only on the same side
        self.sent: Counter[str] = Counter()
        self.lost = 0
        self.version = 0  # grows whenever who can reach whom changes (``moved``)

    # --- reachability --------------------------------------------------------------------

    def reachable(self, a: int, b: int) -> bool:
        return self.up[a] and self.up[b] and self.side[a] == self.side[b]

    def set_up(self, peer: int, up: bool) -> None:
        self.up[peer] = up
        self.version += 1

    def cut(self, members: Sequence[int], side: int) -> None:
        """Partition ``members`` off on a side of their own."""
        for m in members:
            self.side[m] = side
        self.version += 1

    def heal(self, members: Sequence[int]) -> None:
        for m in members:
            self.side[m] = 0
        self.version += 1

    def base_latency(self, a: int, b: int) -> float:
        """The link's one-way latency before jitter."""
        lo, hi = (a, b) if a < b else (b, a)
        factor = 0.75 + 0.5 * ((lo * 7919 + hi * 104729) % 1000) / 1000  # fixed per pair
        return (self.latency[a] + self.latency[b]) * factor

    def delay(self, a: int, b: int) -> float:
        """One message's time on the link, drawn."""
        base = self.base_latency(a, b)
        rng = self.rng
        d = base * (1.0 + self.jitter * rng.random())
        if self.reorder and rng.random() < self.reorder:
            d += base * 20.0 * rng.random()
        return d

    def _lost(self) -> bool:
        return self.loss > 0.0 and self.rng.random() < self.loss

    # --- one way ---------------------------------------------------------------------------

    def send(self, src: int, dst: int, kind: str, handler: Handler, *args: object) -> None:
        """Deliver ``handler(nodes[dst], *args)`` after the link's delay, unless the message is lost."""
        self.sent[kind] += 1
        if not self.reachable(src, dst) or self._lost():
            self.lost += 1
            return
        self.clock.after(self.delay(src, dst), self._arrive, src, dst, self.nodes[dst].epoch, handler, args)

    def _arrive(self, src: int, dst: int, epoch: int, handler: Handler, args: tuple[object, ...]) -> None:
        node = self.nodes[dst]
        if node.epoch != epoch or not self.reachable(src, dst):
            self.lost += 1
            return
        handler(node, *args)

    # --- exchanges -------------------------------------------------------------------------

    def call(
        self, src: int, dst: int, kind: str, handler: Handler, args: tuple[object, ...],
        on_reply: Callable[[object], None], on_fail: Callable[[], None],
    ) -> None:  # fmt: skip
        """Ask ``handler(nodes[dst], call, *args)``; the caller hears ``on_reply`` or ``on_fail`` (see above)."""
        self.sent[kind] += 1
        c = Call(self, src, dst, kind, on_reply, on_fail)
        if not self.reachable(src, dst):
            self.clock.after(2 * self.base_latency(src, dst), self._failed, c)  # no connection: refused at once
            return
        if self._lost():
            self.lost += 1
            self._fail_later(c)
            return
        self.clock.after(self.delay(src, dst), self._serve, c, handler, args)

    def _serve(self, c: Call, handler: Handler, args: tuple[object, ...]) -> None:
        node = self.nodes[c.dst]
        if node.epoch != c.dst_epoch or not self.reachable(c.src, c.dst):
            self.lost += 1
            self._fail_later(c)
            return
        handler(node, c, *args)
        if not c.answered and not c.deferred:
            self._fail_later(c)  # the callee crashed while it handled the request

    def abandon(self, c: Call) -> None:
        """A deferred call whose callee crashed: it is never answered."""
        if not c.answered:
            c.answered = True
            self._fail_later(c)

    def _answer(self, c: Call, result: object) -> None:
        if c.answered:
            return
        c.answered = True
        self.sent[c.kind + " reply"] += 1
        if self.nodes[c.dst].epoch != c.dst_epoch or not self.reachable(c.dst, c.src) or self._lost():
            self.lost += 1
            self._fail_later(c)
            return
        self.clock.after(self.delay(c.dst, c.src), self._reply, c, result)

    def _reply(self, c: Call, result: object) -> None:
        if c.done:
            return
        if self.nodes[c.src].epoch != c.src_epoch or not self.reachable(c.src, c.dst):
            self.lost += 1
            self._fail_later(c)
            return
        c.done = True
        c.on_reply(result)

    def _fail_later(self, c: Call) -> None:
        self.clock.at(c.sent + self.rpc_timeout, self._failed, c)

    def _failed(self, c: Call) -> None:
        if c.done:
            return
        c.done = True
        if self.nodes[c.src].epoch == c.src_epoch and self.up[c.src]:
            c.on_fail()
