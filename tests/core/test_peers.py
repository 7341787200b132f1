"""The peer table state machine, under any sequence of presence, goodbye, connection and clock events."""

from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshnode.core.peer_id import PeerId
from meshnode.core.peers import (
    DIAL_GRACE,
    GONE_INTERVALS,
    GOSSIP_SILENCE,
    GOSSIP_SILENT_INTERVALS,
    LOST_UNIT,
    REDIAL_FIRST,
    REDIAL_GRACE,
    REDIAL_JITTER,
    REDIAL_MAX,
    RTT_EVERY,
    STALE_INTERVALS,
    ConnectionChanged,
    DialFailed,
    DialPeer,
    DropConnection,
    GoodbyeHeard,
    PeerGone,
    PeerJoined,
    PeerReachable,
    PeerStale,
    PeerTable,
    PeerUnreachable,
    PresenceHeard,
    RttMeasured,
    Tick,
    redial_delay,
    rtt_interval,
    WANTED_REDIAL,
    Wanted,
)
from meshnode.core.presence import MAX_HEARTBEAT, MESH_HEARTBEATS, Goodbye, Presence

IDS = sorted(PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i]) * 32).verify_key)) for i in range(5))
ME = IDS[2]  # some peers sort below us, some above: both dialling rules get exercised
OTHERS = [p for p in IDS if p != ME]
MACHINE_DEGREE = 2  # fewer than the other peers, so that the bound is reached


def presence(peer: PeerId, seq: int, interval_ms: int = 1000, addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/1",)) -> Presence:
    return Presence(
        peer_id=peer, seq=seq, interval_ms=interval_ms, addrs=addrs, version="0.1.0", engine="e", runtimes=("wasm",), slots=2,
        idle=2, surplus=0, load1=0.0, mem_free=1, mem_total=2, cpu="cpu", gpus=(),
    )  # fmt: skip


def test_a_connected_peer_never_times_out_and_one_whose_connection_closed_is_gone_10_s_later() -> None:
    t = PeerTable(ME)
    peer = OTHERS[0]
    assert t.handle(ConnectionChanged(peer, True, 0.0)) == []
    out = t.handle(PresenceHeard(presence(peer, 1, interval_ms=30_000), 0.0))
    assert out == [PeerJoined(peer, presence(peer, 1, interval_ms=30_000))]
    assert t.peers[peer].connected  # the connection came before the presence
    out = t.handle(Tick(1000.0))  # no presence for 33 of its intervals, but still connected ...
    assert t.peers[peer].state == "alive" and not [i for i in out if isinstance(i, (PeerStale, PeerGone))]
    # ... (though its gossip is overdue: the connection is dropped to set gossip up afresh on a new one)
    assert out == [DropConnection(peer, "no presence by gossip for 1000 s")]
    t.handle(ConnectionChanged(peer, False, 1000.0))  # it crashed: its kernel closed the connection
    assert not any(isinstance(i, PeerStale) for i in t.handle(Tick(1000.0 + 3 * LOST_UNIT)))  # (it is redialled)
    assert PeerStale(peer) in t.handle(Tick(1000.01 + 3 * LOST_UNIT))
    assert PeerGone(peer, "timeout") in t.handle(Tick(1000.01 + 10 * LOST_UNIT))
    assert t.peers[peer].state == "gone"


def test_a_peer_heard_only_through_gossip_times_out_by_its_own_interval() -> None:
    t = PeerTable(ME)
    peer = OTHERS[0]
    t.handle(PresenceHeard(presence(peer, 1, interval_ms=2000), 0.0))
    assert not any(isinstance(i, PeerStale) for i in t.handle(Tick(6.0)))
    assert PeerStale(peer) in t.handle(Tick(6.01))
    assert PeerGone(peer, "timeout") in t.handle(Tick(20.01))


def test_a_stale_peer_that_reconnects_is_alive_again() -> None:
    t = PeerTable(ME)
    peer = OTHERS[0]
    t.handle(PresenceHeard(presence(peer, 1), 0.0))
    t.handle(ConnectionChanged(peer, True, 0.0))
    t.handle(ConnectionChanged(peer, False, 1.0))
    t.handle(Tick(5.0))
    assert t.peers[peer].state == "stale"
    assert t.handle(ConnectionChanged(peer, True, 5.5)) == []
    assert t.peers[peer].state == "alive"
    assert t.handle(Tick(25.0)) == [] and t.peers[peer].state == "alive"


def test_goodbye_is_immediate_and_blocks_older_presence_but_not_newer() -> None:
    t = PeerTable(ME)
    peer = OTHERS[0]
    t.handle(PresenceHeard(presence(peer, 10), 0.0))
    assert t.handle(GoodbyeHeard(Goodbye(peer, 11), 0.5)) == [PeerGone(peer, "goodbye")]
    assert t.handle(PresenceHeard(presence(peer, 11), 0.6)) == []  # in flight before the goodbye
    assert t.dropped == {"old_seq": 1}
    out = t.handle(PresenceHeard(presence(peer, 5000), 9.0))  # restarted
    assert PeerJoined(peer, presence(peer, 5000)) in out
    assert t.peers[peer].state == "alive"


def test_lower_id_dials_at_once_higher_after_grace() -> None:
    low, high = OTHERS[0], OTHERS[-1]
    assert low < ME < high
    t = PeerTable(ME)
    assert DialPeer(high, ("/ip4/127.0.0.1/tcp/1",)) in t.handle(PresenceHeard(presence(high, 1), 0.0))
    out = t.handle(PresenceHeard(presence(low, 1, interval_ms=30_000), 0.0))
    assert not any(isinstance(i, DialPeer) for i in out)
    assert not any(isinstance(i, DialPeer) for i in t.handle(Tick(DIAL_GRACE - 0.1)))
    assert DialPeer(low, ("/ip4/127.0.0.1/tcp/1",)) in t.handle(Tick(DIAL_GRACE))


def test_a_node_dials_degree_new_peers_and_lists_the_rest_but_redials_a_lost_one_whatever_the_count() -> None:
    low, high = [p for p in OTHERS if p < ME], [p for p in OTHERS if p > ME]
    t = PeerTable(ME, degree=2)
    heard = [PresenceHeard(presence(p, 1, 30_000), 0.0, False) for p in high + low]
    dials = [i.peer for event in heard for i in t.handle(event) if isinstance(i, DialPeer)]
    assert dials == high, "the smaller side dials at once, up to the degree"
    for p in high:
        t.handle(ConnectionChanged(p, True, 1.0))
    assert not [i for i in t.handle(Tick(DIAL_GRACE + 5)) if isinstance(i, DialPeer)], "two connections: enough"
    assert {r.peer for r in t.alive()} == set(OTHERS), "the others are listed all the same"
    t.handle(ConnectionChanged(high[0], False, 30.0))
    redials = [i.peer for i in t.handle(Tick(30.0 + REDIAL_GRACE)) if isinstance(i, DialPeer)]
    assert redials[0] == high[0] and len(redials) == 2 and redials[1] in low, "the lost one, and one new in its place"


def test_a_node_with_no_connection_dials_one_peer_at_once_whatever_its_id() -> None:
    t = PeerTable(IDS[-1])  # larger than every other: it would wait for them to dial
    assert [i for i in t.handle(PresenceHeard(presence(IDS[0], 1), 0.0, False)) if isinstance(i, DialPeer)]
    assert not [i for i in t.handle(PresenceHeard(presence(IDS[1], 1), 0.0, False)) if isinstance(i, DialPeer)]


def test_forgotten_after_a_while() -> None:
    t = PeerTable(ME)
    t.handle(PresenceHeard(presence(OTHERS[0], 1), 0.0))
    t.handle(GoodbyeHeard(Goodbye(OTHERS[0], 2), 1.0))
    t.handle(Tick(1000.0))
    assert OTHERS[0] not in t.peers


def test_a_peer_is_pinged_once_it_is_alive_and_connected_then_every_rtt_every_seconds() -> None:
    t = PeerTable(ME)
    peer, heard_only = OTHERS[0], OTHERS[1]
    t.handle(PresenceHeard(presence(heard_only, 1), 0.0))
    t.handle(ConnectionChanged(peer, True, 0.0))
    assert t.rtt_due(0.0) == [], "a connection with no presence yet is not in the table"
    t.handle(PresenceHeard(presence(peer, 1), 0.5))
    assert t.rtt_due(0.5) == [peer], "due at once; a peer heard only through gossip has no connection to ping"
    t.handle(RttMeasured(peer, 0.7, 0.6))
    assert t.rtt_due(0.6 + RTT_EVERY - 0.01) == []
    assert t.rtt_due(0.6 + RTT_EVERY) == [peer]
    t.handle(RttMeasured(peer, None, 0.6 + RTT_EVERY))  # no answer: the last figure stays, and no ping for a while
    assert t.peers[peer].rtt_ms == 0.7 and t.rtt_due(1.0 + RTT_EVERY) == []
    t.handle(ConnectionChanged(peer, False, 100.0))
    assert t.rtt_due(100.0) == []


@given(st.integers(0, 5000))
def test_a_node_pings_about_as_often_in_a_large_mesh_as_in_a_small_one(peers: int) -> None:
    every = rtt_interval(peers)
    assert RTT_EVERY <= every <= MAX_HEARTBEAT
    pings = peers * RTT_EVERY / every  # a node's pings per RTT_EVERY, over all its peers
    if every < MAX_HEARTBEAT:
        assert pings == pytest.approx(min(peers, MESH_HEARTBEATS))


def test_among_many_peers_each_is_pinged_less_often() -> None:
    t = PeerTable(ME)
    many = [PeerId.from_public_key(bytes(nacl.signing.SigningKey(bytes([i]) * 32).verify_key)) for i in range(10, 59)]
    for p in many:
        t.handle(ConnectionChanged(p, True, 0.0))
        t.handle(PresenceHeard(presence(p, 1), 0.0))
        t.handle(RttMeasured(p, 0.5, 0.0))
    every = rtt_interval(49)
    assert every == pytest.approx(RTT_EVERY * 49 / MESH_HEARTBEATS)
    assert t.rtt_due(RTT_EVERY) == [] and t.rtt_due(every - 0.01) == []
    assert sorted(t.rtt_due(every)) == sorted(many)


def test_own_presence_is_ignored() -> None:
    t = PeerTable(ME)
    assert t.handle(PresenceHeard(presence(ME, 1), 0.0)) == []
    assert ME not in t.peers


def signed_as(peer: PeerId, seq: int) -> bytes:
    """Stands for the signed envelope of ``peer``'s presence number ``seq`` (the table keeps it as it came)."""
    return b"%s/%d" % (peer.to_bytes(), seq)


class PeerTableMachine(RuleBasedStateMachine):
    """Random interleavings; the invariants say what must always hold."""

    @initialize()
    def start(self) -> None:
        self.table = PeerTable(ME, degree=MACHINE_DEGREE)
        self.now = 0.0
        self.dial_open: dict[PeerId, float] = {}  # routine dials of peers never connected, until when they may run
        self.joined: dict[PeerId, int] = {}
        self.connected: dict[PeerId, bool] = {}
        self.last_dial: dict[PeerId, float] = {}
        self.dials: dict[PeerId, int] = {}  # since the last connection
        self.unreachable: set[PeerId] = set()
        self.ticked_at: float | None = None
        self.gossip_since: dict[PeerId, float] = {}  # gossip silence counts from then: heard, connected, dropped

    def apply(self, event: object) -> None:
        wanted = isinstance(event, Wanted)
        opening = {peer for peer, until in self.dial_open.items() if self.now < until}
        instructions = self.table.handle(event)  # type: ignore[arg-type]
        for instruction in instructions:
            if isinstance(instruction, DropConnection) and instruction.reason:
                record = self.table.peers[instruction.peer]
                limit = max(GOSSIP_SILENCE, GOSSIP_SILENT_INTERVALS * record.interval)
                assert self.now - self.gossip_since[instruction.peer] >= limit, "dropped before its gossip fell silent"
                self.gossip_since[instruction.peer] = self.now
        if isinstance(event, Tick):
            for peer, record in self.table.peers.items():
                if record.connected and record.state != "gone":  # silent past the limit: dropped by this tick
                    limit = max(GOSSIP_SILENCE, GOSSIP_SILENT_INTERVALS * record.interval)
                    assert self.now - self.gossip_since[peer] < limit, "gossip fell silent and the connection stayed"
        for instruction in instructions:
            if isinstance(instruction, PeerJoined):
                self.joined[instruction.peer] = self.joined.get(instruction.peer, 0) + 1
                assert self.joined[instruction.peer] == 1, "joined twice without leaving"
            elif isinstance(instruction, PeerGone):
                self.joined[instruction.peer] = self.joined.get(instruction.peer, 0) - 1
                assert self.joined[instruction.peer] == 0, "left without having joined"
            elif isinstance(instruction, DropConnection):
                assert self.connected.get(instruction.peer), "dropping a connection we do not have"
            elif isinstance(instruction, DialPeer):
                assert not self.connected.get(instruction.peer), "dialling a connected peer"
                last, n = self.last_dial.get(instruction.peer), self.dials.get(instruction.peer, 0)
                if last is not None and n > 0:
                    backoff = redial_delay(ME, instruction.peer, n - 1)
                    # a wanted peer is dialled sooner than its backoff says, but never twice within WANTED_REDIAL
                    assert self.now - last >= (min(WANTED_REDIAL, backoff) if wanted else backoff)
                self.last_dial[instruction.peer] = self.now
                self.dials[instruction.peer] = n + 1
                if not wanted and not self.table.peers[instruction.peer].was_connected:
                    links = sum(self.connected.values()) + len(opening - {instruction.peer})
                    assert links < MACHINE_DEGREE, "dialled a new peer with enough connections and dials under way"
                    opening.add(instruction.peer)
                    self.dial_open[instruction.peer] = self.now + DIAL_GRACE
            elif isinstance(instruction, PeerUnreachable):
                assert instruction.peer not in self.unreachable, "said unreachable twice"
                assert not self.connected.get(instruction.peer)
                self.unreachable.add(instruction.peer)
            elif isinstance(instruction, PeerReachable):
                assert instruction.peer in self.unreachable, "reachable again without being unreachable"
                self.unreachable.discard(instruction.peer)

    @rule(peer=st.sampled_from(IDS), seq=st.integers(0, 40), interval=st.sampled_from([100, 1000, 2000, 30_000]),
          by_gossip=st.booleans())  # fmt: skip
    def hear_presence(self, peer: PeerId, seq: int, interval: int, by_gossip: bool) -> None:
        before = self.table.peers[peer].seq if peer in self.table.peers else None
        if by_gossip or before is None:
            self.gossip_since[peer] = self.now
        self.apply(PresenceHeard(presence(peer, seq, interval), self.now, by_gossip, signed_as(peer, seq)))
        if before is not None:
            assert self.table.peers[peer].seq == max(before, seq), "a sequence number went backwards"
        self.ticked_at = None

    @rule(peer=st.sampled_from(IDS), seq=st.integers(0, 40))
    def hear_goodbye(self, peer: PeerId, seq: int) -> None:
        self.apply(GoodbyeHeard(Goodbye(peer, seq), self.now))
        if peer in self.table.peers and seq >= self.table.peers[peer].seq:
            assert self.table.peers[peer].state == "gone"

    @rule(dt=st.floats(0, 40, allow_nan=False))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.apply(Tick(self.now))
        self.ticked_at = self.now
        for peer in OTHERS:
            if peer not in self.table.peers:  # forgotten: it starts afresh if heard of again
                self.dials.pop(peer, None)
                self.dial_open.pop(peer, None)
                self.unreachable.discard(peer)

    @rule(peer=st.sampled_from(OTHERS), up=st.booleans())
    def connection(self, peer: PeerId, up: bool) -> None:
        if up and not self.connected.get(peer):
            self.gossip_since[peer] = self.now  # a new connection: a whole allowance
        self.connected[peer] = up
        self.dial_open.pop(peer, None)
        if up:
            self.dials.pop(peer, None)
        self.apply(ConnectionChanged(peer, up, self.now))

    @rule(peer=st.sampled_from(OTHERS))
    def dial_fails(self, peer: PeerId) -> None:
        if peer in self.table.peers:
            self.dial_open.pop(peer, None)
        self.apply(DialFailed(peer, "connection refused", self.now))

    @rule(peer=st.sampled_from(OTHERS))
    def want(self, peer: PeerId) -> None:
        record = self.table.peers.get(peer)
        known = record is not None and record.state != "gone"
        before = self.dials.get(peer, 0)
        self.apply(Wanted(peer, self.now))
        assert known or self.dials.get(peer, 0) == before, "dialled a peer it does not know, or one that is gone"

    @rule(peer=st.sampled_from(OTHERS), rtt=st.none() | st.floats(0, 1000, allow_nan=False))
    def rtt(self, peer: PeerId, rtt: float | None) -> None:
        self.apply(RttMeasured(peer, rtt, self.now))

    @invariant()
    def never_lists_itself(self) -> None:
        assert ME not in self.table.peers

    @invariant()
    def connection_flags_match(self) -> None:
        for peer, record in self.table.peers.items():
            assert record.connected == self.connected.get(peer, False)

    @invariant()
    def hints_are_the_latest_signed_presences_of_alive_peers(self) -> None:
        for record in self.table.peers.values():
            assert record.signed == signed_as(record.peer, record.presence.seq), "kept another presence than the latest"
            assert self.table.seq_of(record.peer) == record.seq
        for to in IDS:
            expected = {signed_as(r.peer, r.presence.seq) for r in self.table.alive() if r.peer != to}
            assert sorted(self.table.hints(to)) == sorted(expected)
        assert self.table.seq_of(ME) == -1

    @precondition(lambda self: self.ticked_at is not None)
    @invariant()
    def states_follow_the_clock(self) -> None:
        for record in self.table.peers.values():
            silent = self.now - record.last_seen
            if record.connected and record.state != "gone":
                assert record.state == "alive", "a connected peer timed out"
            if silent > GONE_INTERVALS * record.unit:
                assert record.state == "gone"
            elif silent > STALE_INTERVALS * record.unit:
                assert record.state in ("stale", "gone")
            if record.state == "stale":
                assert silent > STALE_INTERVALS * record.unit
            assert record.unit <= record.interval


TestPeerTable = PeerTableMachine.TestCase
TestPeerTable.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(st.lists(st.integers(0, 100), max_size=30))
def test_seq_never_goes_backwards(seqs: list[int]) -> None:
    t = PeerTable(ME)
    seen = 0
    for s in seqs:
        t.handle(PresenceHeard(presence(OTHERS[0], s), 0.0))
        seen = max(seen, s)
        assert t.peers[OTHERS[0]].seq == seen


def test_a_peer_whose_presence_stops_coming_by_gossip_has_its_connection_dropped_then_redialled() -> None:
    peer = OTHERS[0]
    t = PeerTable(ME)
    t.handle(ConnectionChanged(peer, True, 0.0))
    t.handle(PresenceHeard(presence(peer, 1, interval_ms=1000), 0.0, by_gossip=False))  # its hello
    assert t.handle(Tick(GOSSIP_SILENCE - 1)) == []  # gossip may take a while on a new connection
    t.handle(PresenceHeard(presence(peer, 2, interval_ms=1000), GOSSIP_SILENCE - 1))  # and it came
    assert t.handle(Tick(2 * GOSSIP_SILENCE - 1.01)) == []
    t.handle(PresenceHeard(presence(peer, 3, interval_ms=1000), 2 * GOSSIP_SILENCE - 1, by_gossip=False))
    drop = t.handle(Tick(2 * GOSSIP_SILENCE - 1))  # hellos do not count: only gossip shows gossip works
    assert drop == [DropConnection(peer, f"no presence by gossip for {GOSSIP_SILENCE:.0f} s")]
    assert t.handle(Tick(2 * GOSSIP_SILENCE)) == []  # said once, while it closes
    t.handle(ConnectionChanged(peer, False, 2 * GOSSIP_SILENCE))
    redial = t.handle(Tick(2 * GOSSIP_SILENCE + REDIAL_GRACE))
    assert redial == [DialPeer(peer, ("/ip4/127.0.0.1/tcp/1",))], "a fresh connection: pubsub starts afresh on it"
    assert t.peers[peer].state == "alive"


def test_gossip_silence_is_judged_in_the_peers_own_intervals() -> None:
    peer = OTHERS[0]
    t = PeerTable(ME)
    t.handle(ConnectionChanged(peer, True, 0.0))
    t.handle(PresenceHeard(presence(peer, 1, interval_ms=300_000), 0.0))  # a mesh of 50: every 5 minutes
    assert t.handle(Tick(GOSSIP_SILENT_INTERVALS * 300.0 - 1)) == []
    assert [i for i in t.handle(Tick(GOSSIP_SILENT_INTERVALS * 300.0)) if isinstance(i, DropConnection)]


def test_a_timed_out_peer_is_redialled_until_forgotten_but_one_that_said_goodbye_is_not() -> None:
    low, high = OTHERS[0], OTHERS[-1]
    t = PeerTable(ME)
    for peer in (low, high):
        t.handle(PresenceHeard(presence(peer, 1), 0.0))
        t.handle(ConnectionChanged(peer, True, 0.0))
    t.handle(GoodbyeHeard(Goodbye(low, 2), 1.0))
    t.handle(ConnectionChanged(high, False, 1.0))  # its connection closed ...
    assert PeerGone(high, "timeout") in t.handle(Tick(11.01))  # ... and it never came back
    dials = [i for i in t.handle(Tick(11.0 + REDIAL_GRACE)) if isinstance(i, DialPeer)]
    assert dials == [DialPeer(high, ("/ip4/127.0.0.1/tcp/1",))], "a peer it was connected to: the short grace"
    next_tick = Tick(11.0 + REDIAL_GRACE + REDIAL_FIRST * (1 + REDIAL_JITTER))
    later = [i for i in t.handle(next_tick) if isinstance(i, DialPeer)]
    assert later == [DialPeer(high, ("/ip4/127.0.0.1/tcp/1",))]


def test_a_vanished_peer_is_redialled_with_backoff_and_said_unreachable_once() -> None:
    peer = OTHERS[0]
    addrs = ("/ip4/10.0.0.1/tcp/7350", "/ip4/10.0.0.2/tcp/7350")
    t = PeerTable(ME)
    t.handle(PresenceHeard(presence(peer, 1, addrs=addrs), 0.0))
    t.handle(ConnectionChanged(peer, True, 0.0))
    t.handle(ConnectionChanged(peer, False, 1.0))  # it vanished: no more presence, no connection
    dials: list[tuple[float, DialPeer]] = []
    said: list[object] = []
    now = 1.0
    while now < 301.0:  # every tick the node makes (4 a second) over 5 minutes
        for i in t.handle(Tick(now)):
            if isinstance(i, DialPeer):
                dials.append((now, i))
                said += t.handle(DialFailed(peer, "connection refused", now + 0.01))
        now = round(now + 0.25, 2)
    gaps = [b - a for (a, _), (b, _) in zip(dials, dials[1:])]
    for n, gap in enumerate(gaps):  # doubling from 1 s, capped at 60 s, each within the jitter
        base = min(REDIAL_MAX, REDIAL_FIRST * 2**n)
        assert base * (1 - REDIAL_JITTER) <= gap <= base * (1 + REDIAL_JITTER) + 0.25, (n, gap)
    assert 9 <= len(dials) <= 12, len(dials)  # a dial every 5 s made 60 (each of 4 connects: 240)
    assert max(gaps) > REDIAL_MAX * (1 - REDIAL_JITTER)
    assert [d.addrs[0] for _, d in dials[:4]] == [addrs[0], addrs[1], addrs[0], addrs[1]]  # each address in turn
    assert said == [PeerUnreachable(peer, "connection refused", said[0].retry_in)]  # type: ignore[attr-defined]
    assert t.handle(ConnectionChanged(peer, True, 302.0)) == [PeerReachable(peer)]


def test_a_wanted_peer_is_dialled_at_once_from_either_side_at_most_every_few_seconds() -> None:
    t = PeerTable(ME)
    low = min(OTHERS)  # a peer whose ID is smaller than ours: its side dials first, ours only after a grace
    assert low < ME
    t.handle(PresenceHeard(presence(low, 1), 0.0))
    for now in range(1, 100):  # start-up dials time out, the backoff grows; gossip still brings its presence
        t.handle(PresenceHeard(presence(low, 1 + now), float(now)))
        for i in t.handle(Tick(float(now))):
            if isinstance(i, DialPeer):
                t.handle(DialFailed(low, "timed out", now + 0.1))
    assert t.peers[low].next_dial is not None and t.peers[low].next_dial > 120.0
    assert t.peers[low].state == "alive"
    assert [i for i in t.handle(Wanted(low, 100.0)) if isinstance(i, DialPeer) and i.wanted], "it has work for us: dial now"
    assert t.handle(Wanted(low, 100.0 + WANTED_REDIAL / 2)) == [], "a dial is under way"
    assert [i for i in t.handle(Wanted(low, 100.0 + WANTED_REDIAL)) if isinstance(i, DialPeer)]
    t.handle(ConnectionChanged(low, True, 106.0))
    assert t.handle(Wanted(low, 200.0)) == [], "connected already"
    assert t.handle(Wanted(OTHERS[1], 200.0)) == [], "never heard of"
    t.handle(GoodbyeHeard(Goodbye(low, 1000), 201.0))
    t.handle(ConnectionChanged(low, False, 201.0))
    assert t.handle(Wanted(low, 300.0)) == [], "it said goodbye"


def test_redial_jitter_differs_between_peers_and_attempts_but_never_between_runs() -> None:
    delays = {redial_delay(ME, peer, n) for peer in OTHERS for n in range(3, 5)}
    assert len(delays) == len(OTHERS) * 2
    assert redial_delay(ME, OTHERS[0], 3) == redial_delay(ME, OTHERS[0], 3)
    low, high = REDIAL_MAX * (1 - REDIAL_JITTER), REDIAL_MAX * (1 + REDIAL_JITTER)
    assert all(low <= redial_delay(ME, p, 40) < high for p in OTHERS)


def test_a_presence_from_new_addresses_is_dialled_at_once() -> None:
    peer = OTHERS[-1]  # above us: we dial it without waiting for the grace period
    t = PeerTable(ME)
    t.handle(PresenceHeard(presence(peer, 1), 0.0))
    for now in range(1, 40):
        t.handle(Tick(float(now)))  # dials back off to many seconds apart
    assert not [i for i in t.handle(Tick(40.0)) if isinstance(i, DialPeer)]
    moved = presence(peer, 2, addrs=("/ip4/127.0.0.1/tcp/2",))
    assert DialPeer(peer, moved.addrs) in t.handle(PresenceHeard(moved, 40.1))


def test_a_connection_that_stays_silent_is_dropped() -> None:
    from meshnode.core.peers import SILENT_CONNECTION_LIMIT

    stranger, restarted = OTHERS[0], OTHERS[1]
    t = PeerTable(ME)
    t.handle(ConnectionChanged(stranger, True, 0.0))  # never says a word
    t.handle(PresenceHeard(presence(restarted, 1), 0.0))
    t.handle(ConnectionChanged(restarted, True, 0.0))
    t.handle(GoodbyeHeard(Goodbye(restarted, 2), 1.0))  # it left ...
    t.handle(ConnectionChanged(restarted, False, 1.1))
    t.handle(ConnectionChanged(restarted, True, 2.0))  # ... and came back, but its gossip never arrives
    assert t.handle(Tick(SILENT_CONNECTION_LIMIT)) == []
    out = t.handle(Tick(SILENT_CONNECTION_LIMIT + 2.1))
    assert DropConnection(stranger) in out and DropConnection(restarted) in out
