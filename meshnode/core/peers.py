"""The peer table: who is in the mesh, and whether they are still there.

Theory of operation:

A peer enters the table when its first valid ``Presence`` arrives: by gossip,
from the peer itself in a hello, or passed on in another peer's hello (the
table keeps each presence in its signed envelope for that: ``hints``). Its state
is then a function of how long it has been silent, measured in a unit of
seconds that depends on what was last heard of it:

    state    condition                                   entered by
    -------  ------------------------------------------  -------------------------
    alive    connected, or silent no longer than 3 units a presence, a connection
    stale    silent longer than 3 units                  a tick
    gone     silent longer than 10 units, or a goodbye   a tick, or a goodbye

A live connection is itself the sign of life: a connected peer is never timed
out here, however rarely it publishes (a silent host's connection is closed by
the transport's keepalive, a crashed one's by its kernel). So peers publish
presence only when something others act on changes, plus a slow heartbeat, and
an idle mesh costs next to nothing. Silence is counted from the last presence
in the peer's own advertised publishing interval (a peer heard only through
gossip), or from the moment its last connection closed in units of at most
``LOST_UNIT`` seconds (a peer we were connected to: gone 10 s after it
vanished, unless it comes back or is heard from).

Every presence or goodbye carries a sequence number; anything not newer than
the last one seen from that peer is ignored and counted, so a replayed or
reordered message can never move a peer backwards. A goodbye raises the
peer's sequence number too: an older presence still in flight cannot revive
it, but a newer one (the node restarted) can.

Gone peers stay listed (so ``peers`` shows who left) until ``FORGET_AFTER``
seconds, then are forgotten.

The table also decides whom to dial. A node connects of its own accord to
``degree`` peers (``CONNECTION_DEGREE``), not to all it knows: every other peer
is listed from its signed presence, passed on by gossip and in hellos' hints,
and gossip spreads over the connections there are. A full mesh of 50 nodes is
1,225 connections whose handshakes took both cores of a machine for minutes.
So a peer heard of but never connected to is dialled only while the node has
fewer than ``degree`` connections and dials under way (peers that dial us
count too); one that was connected and timed out (its link may come back) is
dialled whatever the count, so that a mesh split by a failed link heals. Either
is dialled by the side with the smaller peer ID at once and by the other side
only after ``DIAL_GRACE`` seconds (two sides dialling each other at once make
two connections), or ``REDIAL_GRACE`` seconds for a peer it was connected to
(one that vanished does not dial back, and a lost link is best found again
soon); a node with no connection at all does not wait. Dials go to the addresses of the
peer's latest presence, starting from a different one each time, and repeat
with exponential backoff while no connection comes: ``REDIAL_FIRST`` seconds
after the first, doubling up to ``REDIAL_MAX``, each stretched or shrunk by up
to ``REDIAL_JITTER`` so that the nodes of a mesh do not redial in step. The
jitter is a hash of the two peer IDs and the attempt number, not a random
draw, so the schedule is a pure function of the events. A connection, or a
presence with new addresses (the peer restarted elsewhere), starts the
schedule afresh. The edge reports a failed dial (``DialFailed``); the first
after the peer was last reachable yields ``PeerUnreachable``, and the next
connection ``PeerReachable``, so the node says each once, not at every dial.
A peer the node wants to talk to now (``Wanted``: it offers work to steal, or
owns results waiting to be pushed) is dialled at once, whichever side it is and
however long its backoff has grown, but at most once per ``WANTED_REDIAL``
seconds: on a loaded LAN, start-up dials that timed out had left pairs
unconnected for a minute at a time, and a thief cannot ask a peer it has no
connection to.
A connection that carries no presence for ``SILENT_CONNECTION_LIMIT`` seconds
(from a peer never heard from, or from one that left and came back) is dropped
too: gossip state can go stale on a connection that stays up (seen when a node
restarted within milliseconds under the same identity), and a fresh connection
starts it afresh. So is the connection of a peer whose presence has not come
by gossip for ``GOSSIP_SILENT_INTERVALS`` of its intervals (at least
``GOSSIP_SILENCE`` seconds): its hellos and streams may still work while the
gossip between us does not, and only that silence shows it.

The table also says whose round-trip time to measure (``rtt_due``): a connected
peer as soon as it is alive, then every ``rtt_interval`` seconds, and a peer that
did not answer a ping only that much later. The interval is ``RTT_EVERY`` among a
few peers and grows with their number as the presence heartbeat does, so a node
sends about as many pings in a mesh of 50 as in one of 5 (at 50 nodes a ping and its
answer every 30 s per connection were a sizeable share of an idle node's packets).

Time is an argument (seconds on a monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from .peer_id import PeerId
from .presence import Goodbye, Presence, heartbeat_interval

__all__ = [
    "CONNECTION_DEGREE",
    "ConnectionChanged",
    "DialFailed",
    "DialPeer",
    "DropConnection",
    "GOSSIP_SILENCE",
    "GOSSIP_SILENT_INTERVALS",
    "GoodbyeHeard",
    "PeerGone",
    "PeerJoined",
    "PeerReachable",
    "PeerRecord",
    "PeerStale",
    "PeerTable",
    "PeerUnreachable",
    "PresenceHeard",
    "REDIAL_GRACE",
    "RTT_EVERY",
    "RttMeasured",
    "Tick",
    "WANTED_REDIAL",
    "Wanted",
    "redial_delay",
    "rtt_interval",
]

# Peers a node dials of its own accord (not counting those it needs now: ``Wanted``). Enough that gossip,
# at degree 6 over these links, reaches every node in a few hops and loses no one when a few leave.
CONNECTION_DEGREE: Final = 8
STALE_INTERVALS: Final = 3
GONE_INTERVALS: Final = 10
FORGET_AFTER: Final = 300.0
# longer than a dial may take (host.DIAL_TIMEOUT, 15 s): the larger side dials only once the smaller
# side's dial had time to fail. At 3 s, dials slower than that on a busy machine were met by the other
# side's, and pairs set up two connections, each a handshake both ends pay for.
DIAL_GRACE: Final = 20.0
REDIAL_GRACE: Final = 3.0  # the same, for a peer this node was connected to
REDIAL_FIRST: Final = 1.0  # seconds from a dial to the next while the peer stays unconnected ...
REDIAL_MAX: Final = 60.0  # ... doubling each time up to this
REDIAL_JITTER: Final = 0.2  # each delay is stretched or shrunk by up to this fraction
WANTED_REDIAL: Final = 5.0  # seconds between two dials of a peer the node wants to talk to (``Wanted``)
# seconds connected without a word before the connection is dropped: longer than a hello's
# retries take on a busy machine (50 nodes starting on 2 cores timed hellos out at 15 s)
SILENT_CONNECTION_LIMIT: Final = 30.0
# A connected peer whose presence has not come by gossip for this many of its intervals, and at least
# GOSSIP_SILENCE seconds, has its connection dropped and dialled afresh: libp2p's pubsub can lose a
# connected peer's stream or subscription (net/libp2p_adapter.py) and never gossip with it again, while
# hellos and streams still work; a thief told "nothing left" then never hears of its owner's new work.
# A last resort, judged on what arrives, not on pubsub's state (a peer in a mesh of 50 is reached
# through others: dropping every connection pubsub had not linked within 30 s dropped 5,058 in 6
# minutes), and slower than a loaded mesh's gossip ever is (50 nodes starting on 2 cores left 113
# connected peers unheard by gossip for 90 s, and those drops slowed the tables filling).
GOSSIP_SILENT_INTERVALS: Final = 3
GOSSIP_SILENCE: Final = 300.0
LOST_UNIT: Final = 1.0  # at most this many seconds per unit of silence once a peer's connection closed
RTT_EVERY: Final = 30.0  # seconds between two round-trip measurements of a connected peer, among a few peers

State = Literal["alive", "stale", "gone"]


def rtt_interval(peers: int) -> float:
    """Seconds between two round-trip measurements of one of ``peers`` connected peers: ``RTT_EVERY``
    among a few, longer in proportion among many (spread as the presence heartbeat is)."""
    return heartbeat_interval(RTT_EVERY, peers)


# --- events (in) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresenceHeard:
    presence: Presence  # already decoded and signature-checked by the edge
    now: float
    by_gossip: bool = True  # False: handed over directly (a hello, or a hint in one)
    signed: bytes = b""  # the presence in its signed envelope, as heard: passed on in hints


@dataclass(frozen=True, slots=True)
class GoodbyeHeard:
    goodbye: Goodbye
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class RttMeasured:
    peer: PeerId
    rtt_ms: float | None  # None: no answer in time (the last figure stays)
    now: float


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    peer: PeerId
    connected: bool
    now: float


@dataclass(frozen=True, slots=True)
class DialFailed:
    peer: PeerId
    reason: str  # one line, for the log
    now: float


@dataclass(frozen=True, slots=True)
class Wanted:
    """The node has something to ask the peer now (work to steal, results to push)."""

    peer: PeerId
    now: float


Event = PresenceHeard | GoodbyeHeard | Tick | RttMeasured | ConnectionChanged | DialFailed | Wanted


# --- instructions (out) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerJoined:
    peer: PeerId
    presence: Presence


@dataclass(frozen=True, slots=True)
class PeerStale:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class PeerGone:
    peer: PeerId
    reason: Literal["goodbye", "timeout"]


@dataclass(frozen=True, slots=True)
class DialPeer:
    peer: PeerId
    addrs: tuple[str, ...]
    wanted: bool = False  # the node has something to ask the peer now (``Wanted``): no waiting behind other dials


@dataclass(frozen=True, slots=True)
class DropConnection:
    peer: PeerId
    reason: str = ""  # for the log; empty for a connection that never carried a presence


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """A dial to the peer failed, the first since it was last connected; more follow with backoff."""

    peer: PeerId
    reason: str
    retry_in: float  # seconds until the next dial


@dataclass(frozen=True, slots=True)
class PeerReachable:
    """A peer reported unreachable is connected again."""

    peer: PeerId


Instruction = PeerJoined | PeerStale | PeerGone | DialPeer | DropConnection | PeerUnreachable | PeerReachable


def redial_delay(me: PeerId, peer: PeerId, attempt: int) -> float:
    """Seconds from dial number ``attempt`` (0 for the first) to the next, while ``peer`` stays unconnected.

    ``REDIAL_FIRST`` doubling up to ``REDIAL_MAX``, times a factor within
    ``1 ± REDIAL_JITTER`` drawn from a hash of the two peers and the attempt.
    """
    base = min(REDIAL_MAX, REDIAL_FIRST * 2.0 ** min(attempt, 32))
    digest = hashlib.blake2b(me.to_bytes() + peer.to_bytes() + attempt.to_bytes(8, "big"), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64  # in [0, 1)
    return base * (1 - REDIAL_JITTER + 2 * REDIAL_JITTER * fraction)


# --- the table --------------------------------------------------------------------------------


@dataclass(slots=True)
class PeerRecord:
    """What this node knows of one peer."""

    peer: PeerId
    presence: Presence
    state: State
    seq: int
    last_seen: float
    state_since: float
    connected: bool = False
    rtt_ms: float | None = None
    rtt_at: float | None = None  # when the round-trip time was last measured (or a ping went unanswered)
    unconnected_since: float | None = None
    was_connected: bool = False  # ever, since it entered the table
    dials: int = 0  # dials since the peer was last connected (or changed its addresses)
    next_dial: float | None = None  # no dial before this time
    last_dial: float | None = None  # when it was last dialled
    unreachable: bool = False  # a dial failed since the peer was last connected
    left_by_goodbye: bool = False
    unit: float = 1.0  # seconds per unit of silence (see the module docstring)
    gossip_heard: float | None = None  # when a presence of it last came by gossip
    gossip_due: float = 0.0  # gossip silence is counted from the later of this and gossip_heard
    signed: bytes = b""  # ``presence`` in its signed envelope, to pass on in hints (empty: not heard signed)
    dial_open_until: float | None = None  # a routine dial may still be under way until then

    @property
    def interval(self) -> float:
        """How often the peer says it publishes presence, in seconds."""
        return self.presence.interval_ms / 1000

    def opening(self, now: float) -> bool:
        """A routine dial of this peer may still be under way."""
        return self.dial_open_until is not None and now < self.dial_open_until


@dataclass(slots=True)
class PeerTable:
    """The peer table state machine. Feed it events with ``handle``; carry out what it returns."""

    me: PeerId
    degree: int = CONNECTION_DEGREE  # peers to connect to of its own accord (see the module docstring)
    peers: dict[PeerId, PeerRecord] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # ignored messages, by reason
    _early_connections: dict[PeerId, float] = field(default_factory=dict)  # connected, no presence yet: since when

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event and return what the node must do about it."""
        if isinstance(event, PresenceHeard):
            return self._presence(event.presence, event.now, event.by_gossip, event.signed)
        if isinstance(event, GoodbyeHeard):
            return self._goodbye(event.goodbye, event.now)
        if isinstance(event, Tick):
            return self._tick(event.now)
        if isinstance(event, RttMeasured):
            record = self.peers.get(event.peer)
            if record is not None:
                record.rtt_at = event.now
                if event.rtt_ms is not None:
                    record.rtt_ms = event.rtt_ms
            return []
        if isinstance(event, DialFailed):
            return self._dial_failed(event.peer, event.reason, event.now)
        if isinstance(event, ConnectionChanged):
            return self._connection(event.peer, event.connected, event.now)
        if isinstance(event, Wanted):
            return self._wanted(event.peer, event.now)
        raise TypeError(f"not a peer table event: {event!r}")

    def _drop(self, reason: str) -> list[Instruction]:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return []

    def _presence(self, p: Presence, now: float, by_gossip: bool, signed: bytes) -> list[Instruction]:
        if p.peer_id == self.me:
            return []  # our own message, echoed back by gossip
        record = self.peers.get(p.peer_id)
        if record is None:
            connected = self._early_connections.pop(p.peer_id, None) is not None
            record = PeerRecord(p.peer_id, p, "alive", p.seq, now, now, connected=connected, was_connected=connected,
                                unit=p.interval_ms / 1000, gossip_heard=now if by_gossip else None, gossip_due=now,
                                signed=signed)
            self.peers[p.peer_id] = record
            return [PeerJoined(p.peer_id, p), *self._maybe_dial(record, now)]
        if by_gossip:
            record.gossip_heard = now  # it arrived: gossip works, whether or not it is news
        if p.seq <= record.seq:
            return self._drop("old_seq")
        was = record.state
        if p.addrs != record.presence.addrs:
            record.dials, record.next_dial = 0, None  # somewhere new: worth a dial at once
        record.presence, record.seq, record.last_seen, record.signed = p, p.seq, now, signed
        record.unit = record.interval
        record.left_by_goodbye = False
        out: list[Instruction] = []
        if was != "alive":
            record.state, record.state_since = "alive", now
            if was == "gone":
                out.append(PeerJoined(p.peer_id, p))
        return out + self._maybe_dial(record, now)

    def _goodbye(self, g: Goodbye, now: float) -> list[Instruction]:
        record = self.peers.get(g.peer_id)
        if record is None or g.peer_id == self.me:
            return []
        if g.seq < record.seq:
            return self._drop("old_seq")
        record.seq = g.seq
        record.left_by_goodbye = True
        if record.state == "gone":
            return []
        record.state, record.state_since = "gone", now
        return [PeerGone(g.peer_id, "goodbye")]

    def _tick(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        links = self.connections() + self._opening(now)  # kept up to date below: one count per tick, not per peer
        for peer, since in list(self._early_connections.items()):
            if now - since > SILENT_CONNECTION_LIMIT:
                # connected but never heard from: a peer whose gossip never reached us
                # (or no meshnode at all); a fresh connection re-establishes gossip
                self._early_connections[peer] = now  # still connected until the edge reports it closed
                out.append(DropConnection(peer))
        for peer, record in list(self.peers.items()):
            if record.connected and record.state != "gone":
                record.last_seen = now  # a live connection is a sign of life (see the module docstring)
                if record.state == "stale":
                    record.state, record.state_since = "alive", now
                out.extend(self._gossip_silence(record, now))
            silent = now - record.last_seen
            if record.state == "gone" and record.connected and now - record.state_since > SILENT_CONNECTION_LIMIT:
                # gone, yet connected and silent: a restarted peer whose gossip does not
                # reach us; dropping the connection lets both sides start afresh
                out.append(DropConnection(peer))
                record.state_since = now
            elif record.state != "gone" and silent > GONE_INTERVALS * record.unit:
                record.state, record.state_since = "gone", now
                out.append(PeerGone(peer, "timeout"))
            elif record.state == "alive" and silent > STALE_INTERVALS * record.unit:
                record.state, record.state_since = "stale", now
                out.append(PeerStale(peer))
            elif record.state == "gone" and now - record.state_since > FORGET_AFTER:
                del self.peers[peer]
            elif not (record.state == "gone" and record.left_by_goodbye):
                # alive, stale, or timed out (perhaps a link that is down for now): keep
                # trying its last addresses, so it rejoins when it can be reached again
                was_opening = record.opening(now)
                out.extend(self._maybe_dial(record, now, links - was_opening))
                links += record.opening(now) - was_opening
        return out

    def _gossip_silence(self, record: PeerRecord, now: float) -> list[Instruction]:
        """Drop the connection of a peer whose presence stopped coming by gossip (``GOSSIP_SILENT_INTERVALS``)."""
        limit = max(GOSSIP_SILENCE, GOSSIP_SILENT_INTERVALS * record.interval)
        since = max(record.gossip_due, record.gossip_heard or 0.0)
        if now - since < limit:
            return []
        record.gossip_due = now  # once per limit, while the connection closes and comes back
        return [DropConnection(record.peer, f"no presence by gossip for {now - since:.0f} s")]

    def _connection(self, peer: PeerId, connected: bool, now: float) -> list[Instruction]:
        record = self.peers.get(peer)
        if record is None:
            if connected:
                self._early_connections.setdefault(peer, now)
            else:
                self._early_connections.pop(peer, None)
            return []
        if connected and not record.connected:
            record.gossip_due = now  # a new connection: gossip on it gets the whole allowance
        if connected and not record.connected and record.state == "gone":
            record.state_since = now  # a gone peer reconnected (a restart?): give it time to speak
        if connected and record.state == "stale":
            record.state, record.state_since, record.last_seen = "alive", now, now
        if not connected and record.connected and record.state != "gone":
            # silence counts from now, in short units: a crashed or vanished peer is gone
            # within 10 s unless it reconnects or a presence says it is still there
            record.last_seen, record.unit = now, min(record.interval, LOST_UNIT)
        record.connected = connected
        record.was_connected |= connected
        record.dial_open_until = None
        record.unconnected_since = None if connected else now
        if not connected:
            return []
        record.dials, record.next_dial = 0, None
        if record.unreachable:
            record.unreachable = False
            return [PeerReachable(peer)]
        return []

    def _dial_failed(self, peer: PeerId, reason: str, now: float) -> list[Instruction]:
        record = self.peers.get(peer)
        if record is not None:
            record.dial_open_until = None
        if record is None or record.connected or record.unreachable:
            return []  # a stranger (an mDNS find), a race with a connection, or already said
        record.unreachable = True
        retry_in = max(0.0, record.next_dial - now) if record.next_dial is not None else 0.0
        return [PeerUnreachable(peer, reason, retry_in)]

    def _maybe_dial(self, record: PeerRecord, now: float, links: int | None = None) -> list[Instruction]:
        """Dial ``record`` if it is time. ``links``: connections and routine dials under way, other than
        ``record``'s own (counted here if not given)."""
        if record.connected or not record.presence.addrs:
            return []
        if record.unconnected_since is None:
            record.unconnected_since = now
        if record.next_dial is not None and now < record.next_dial:
            return []
        if record.was_connected:  # a lost link is redialled whatever the count: a split mesh heals
            first = self.me < record.peer
            grace = REDIAL_GRACE
        else:
            if links is None:
                links = self.connections() + self._opening(now) - record.opening(now)
            if links >= self.degree:
                return []  # enough connections: the peer stays listed from its presence
            first, grace = self.dials_first(record.peer, links), DIAL_GRACE
        if first or now - record.unconnected_since >= grace:
            return [self._dial(record, now)]
        return []

    def _opening(self, now: float) -> int:
        """Routine dials that may still be under way."""
        return sum(1 for r in self.peers.values() if r.opening(now))

    def _wanted(self, peer: PeerId, now: float) -> list[Instruction]:
        record = self.peers.get(peer)
        if record is None or record.connected or record.state == "gone" or not record.presence.addrs:
            return []
        if record.last_dial is not None and now - record.last_dial < WANTED_REDIAL:
            return []  # a dial is under way, or failed a moment ago
        if record.unconnected_since is None:
            record.unconnected_since = now
        return [self._dial(record, now, wanted=True)]

    def _dial(self, record: PeerRecord, now: float, wanted: bool = False) -> DialPeer:
        record.next_dial = now + redial_delay(self.me, record.peer, record.dials)
        record.last_dial = now
        if not wanted and not record.was_connected:  # a dial of a new peer takes one of the ``degree`` places
            record.dial_open_until = now + DIAL_GRACE  # longer than a dial takes (``DIAL_GRACE``)
        addrs = record.presence.addrs
        first = record.dials % len(addrs)  # libp2p dials only the first: each try starts elsewhere
        record.dials += 1
        return DialPeer(record.peer, addrs[first:] + addrs[:first], wanted)

    # --- queries -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PeerRecord]:
        return iter(self.peers.values())

    def alive(self) -> list[PeerRecord]:
        return [r for r in self.peers.values() if r.state == "alive"]

    def seq_of(self, peer: PeerId) -> int:
        """The sequence number of the latest message heard from ``peer`` (-1: none)."""
        record = self.peers.get(peer)
        return -1 if record is None else record.seq

    def connections(self) -> int:
        """Peers connected to us, listed or not yet heard from."""
        return sum(1 for r in self.peers.values() if r.connected) + len(self._early_connections)

    def dials_first(self, peer: PeerId, links: int) -> bool:
        """Whether we dial a new peer without first waiting ``DIAL_GRACE`` for it to dial us: the smaller
        peer ID dials (two connections per pair would double what idle links cost), and so does a node
        with no links at all (perhaps no one will dial it)."""
        return self.me < peer or not links

    def hints(self, to: PeerId) -> list[bytes]:
        """The signed presences to pass on to ``to``: of every alive peer but ``to``, connected to us or not."""
        return [r.signed for r in self.peers.values() if r.state == "alive" and r.signed and r.peer != to]

    def rtt_due(self, now: float) -> list[PeerId]:
        """The connected, alive peers whose round-trip time is unmeasured or ``rtt_interval`` seconds old."""
        pingable = [r for r in self.peers.values() if r.state == "alive" and r.connected]
        every = rtt_interval(len(pingable))
        return [r.peer for r in pingable if r.rtt_at is None or now - r.rtt_at >= every]
