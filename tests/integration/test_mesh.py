"""Several real nodes in one process, over loopback: discovery, presence, goodbye and timeouts."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from meshnode.core import peers, wire
from meshnode.core.peer_id import PeerId
from meshnode.core.peers import GONE_INTERVALS, SILENT_CONNECTION_LIMIT
from meshnode.core.presence import MAX_SIGNED_PRESENCE, PeerHints, Presence
from meshnode.net.hello import HELLO_PROTOCOL
from meshnode.net.host import open_host
from meshnode.net.streams import read_request
from meshnode.node.mesh_node import MeshNode, open_node
from meshnode.storage.identity import load_or_create_identity

from ..waiting import MEET, STEP, wait_until
from .conftest import node_config


def states(node: MeshNode) -> dict[PeerId, str]:
    return {r.peer: r.state for r in node.table}


@pytest.mark.waits
async def test_five_nodes_joined_by_bootstrap_converge_and_a_stopped_node_is_gone_everywhere(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        nodes: list[MeshNode] = []
        heartbeat = 30.0  # the default: presence is published this rarely when nothing changes
        started = time.monotonic()
        for i in range(5):
            # a chain: each node knows only the previous one; the rest it learns from the hellos' hints
            boot = tuple(nodes[-1].dial_addrs) if nodes else ()
            config = node_config(tmp_path, f"n{i}", bootstrap=boot, presence_interval=heartbeat)
            nodes.append(await stack.enter_async_context(open_node(config)))
        everyone = {n.peer_id for n in nodes}
        await wait_until(
            lambda: all({r.peer for r in n.table.alive()} == everyone - {n.peer_id} for n in nodes),
            timeout=MEET, what="full peer tables",
        )  # fmt: skip
        # before any heartbeat (25 s at the earliest, with the jitter): hellos did it
        assert time.monotonic() - started < heartbeat * 5 / 6
        await wait_until(lambda: all(r.connected for n in nodes for r in n.table), MEET, "direct connections")

        leaver = nodes.pop(2)
        # leave its context by hand: a normal exit says goodbye
        async with open_node(node_config(tmp_path, "extra", bootstrap=tuple(nodes[0].dial_addrs))) as extra:
            await wait_until(lambda: len(extra.table.alive()) == 5, MEET, "the extra node to see everyone")
            await wait_until(lambda: all(states(n).get(extra.peer_id) == "alive" for n in nodes), MEET, "all to see it")
            leaving = time.monotonic()
        # Without the goodbye each node would time the extra node out, GONE_INTERVALS of its
        # presence intervals after its last presence: the goodbye must have been handled before that.
        await wait_until(lambda: all(states(n).get(extra.peer_id) == "gone" for n in nodes), STEP, "goodbye")
        for n in nodes:
            record = n.table.peers[extra.peer_id]
            timed_out_at = record.last_seen + GONE_INTERVALS * record.unit
            assert record.left_by_goodbye and record.state_since < timed_out_at, (
                f"{n.peer_id} marked the extra node gone {record.state_since - leaving:.2f} s after it said goodbye, "
                f"{record.state_since - timed_out_at:+.2f} s from when it would have timed it out"
            )
        assert all(r.state == "alive" for n in nodes for r in n.table if r.peer not in (extra.peer_id,))
        del leaver


async def test_a_hello_hands_a_newcomer_the_signed_presence_of_each_peer_the_node_lists(tmp_path: Path) -> None:
    heard, hellos = trio.open_memory_channel[tuple[bytes, bytes]](4)

    async def hello_to_newcomer(remote: PeerId, stream: object) -> None:
        await heard.send((await read_request(stream, MAX_SIGNED_PRESENCE), await read_request(stream, 1 << 20)))

    async with open_node(node_config(tmp_path, "a")) as a:
        async with open_node(node_config(tmp_path, "b", bootstrap=tuple(a.dial_addrs))) as b:
            await wait_until(lambda: b.table.peers.get(a.peer_id) is not None and b.table.peers[a.peer_id].connected,
                             MEET, "b to be connected to a")  # fmt: skip
            # a newcomer (a bare host that only listens to hellos) connects to b alone
            async with open_host(load_or_create_identity(tmp_path / "newcomer"), ["/ip4/127.0.0.1/tcp/0"]) as newcomer:
                newcomer.set_stream_handler(HELLO_PROTOCOL, hello_to_newcomer)
                await newcomer.dial(b.peer_id, b.host.listen_addrs)
                with trio.fail_after(MEET):
                    own, hints = await hellos.receive()
    assert wire.open_signed(own, b.peer_id, Presence).peer_id == b.peer_id
    passed_on = [wire.open_signed(signed, a.peer_id, Presence) for signed in wire.decode(hints, PeerHints).presences]
    assert [p.peer_id for p in passed_on] == [a.peer_id]  # signed by a itself: the newcomer lists a without asking it


@pytest.mark.waits
async def test_a_heartbeat_comes_within_the_interval_the_last_presence_advertised_as_the_table_grows(
    tmp_path: Path,
) -> None:
    """The heartbeat interval grows with the table (``heartbeat_interval``); peers time a node out by the
    interval its last presence advertised, so its next heartbeat must come within that one, not the new."""
    import nacl.signing

    from meshnode.core.peers import PresenceHeard
    from meshnode.node.mesh_node import JOIN_ANNOUNCE_GAPS

    async with open_node(node_config(tmp_path, "a", presence_interval=1.0)) as a:
        a._join_announcements = len(JOIN_ANNOUNCE_GAPS) + 1  # no join announcements: heartbeats only
        async with open_node(node_config(tmp_path, "b", bootstrap=tuple(a.dial_addrs))) as b:
            heard: list[tuple[float, int]] = []  # a's presences at b by gossip: (when, advertised interval ms)
            real = b._presence_heard

            def record(msg: Presence, signed: bytes, by_gossip: bool = True) -> None:
                if msg.peer_id == a.peer_id and by_gossip:
                    heard.append((trio.current_time(), msg.interval_ms))
                real(msg, signed, by_gossip)

            b._presence_heard = record  # type: ignore[method-assign]
            await wait_until(lambda: len(heard) >= 2, MEET, "b to hear a's heartbeats")
            for i in range(60):  # 60 more peers listed: a's interval becomes 12 s
                key = nacl.signing.SigningKey(bytes([i + 1]) * 32)
                other = Presence(
                    peer_id=PeerId.from_public_key(bytes(key.verify_key)), seq=1, interval_ms=600_000, addrs=(),
                    version="0.1.0", engine="e", runtimes=("wasm",), slots=1, idle=1, surplus=0, load1=0.0, mem_free=1,
                    mem_total=2, cpu="cpu", gpus=(),
                )  # fmt: skip
                a.table.handle(PresenceHeard(other, time.monotonic(), by_gossip=False))
            await wait_until(lambda: heard[-1][1] >= 10_000, MEET, "a to advertise its longer interval")
    longer = next(i for i, (_, interval) in enumerate(heard) if interval >= 10_000)
    (before, advertised), (after, _) = heard[longer - 1], heard[longer]
    assert after - before <= advertised / 1000 * 7 / 6 + 5.0, "the next heartbeat took the new interval, not the advertised"


@pytest.mark.waits
async def test_an_abruptly_cancelled_node_turns_stale_then_gone_by_timeout(tmp_path: Path) -> None:
    seen: list[str] = []  # a's view of b, each change in order

    async def watch(peer: PeerId) -> None:
        while True:
            state = states(a).get(peer, "absent")
            if not seen or seen[-1] != state:
                seen.append(state)
            await trio.sleep(0.02)

    # b publishes every 0.5 s: a times it out after 5 s, and shows it stale from 1.5 s on
    async with open_node(node_config(tmp_path, "a")) as a, trio.open_nursery() as watchers:
        with trio.CancelScope() as doomed_scope:
            async with open_node(node_config(tmp_path, "b", bootstrap=tuple(a.dial_addrs), presence_interval=0.5)) as b:
                await wait_until(lambda: states(a).get(b.peer_id) == "alive", MEET, "b to join")
                doomed = b.peer_id
                watchers.start_soon(watch, doomed)
                doomed_scope.cancel()  # no goodbye: as if the process died
        await wait_until(lambda: seen[-1] == "gone", STEP, "timeout")
        watchers.cancel_scope.cancel()
        assert seen == ["alive", "stale", "gone"], seen
        assert not a.table.peers[doomed].left_by_goodbye


@pytest.mark.waits
async def test_bad_gossip_is_dropped_and_counted_and_the_node_carries_on(tmp_path: Path) -> None:
    from meshnode.core import wire
    from meshnode.net.gossip import PRESENCE_TOPIC
    from meshnode.net.host import open_host
    from meshnode.storage.identity import load_or_create_identity

    async with open_node(node_config(tmp_path, "victim")) as victim, open_node(
        node_config(tmp_path, "friend", bootstrap=tuple(victim.dial_addrs))
    ) as friend:
        await wait_until(lambda: len(victim.table.alive()) == 1, MEET, "the friend to join")
        # a rogue host: plain libp2p gossip with no meshnode validator, so its garbage goes out
        rogue_id = load_or_create_identity(tmp_path / "rogue")
        other_key = load_or_create_identity(tmp_path / "other").signing_key
        async with open_host(rogue_id, ["/ip4/127.0.0.1/tcp/0"]) as rogue:
            await rogue.dial(victim.peer_id, victim.host.listen_addrs)
            await rogue.pubsub.subscribe(PRESENCE_TOPIC)
            honest = victim._presence()  # a valid presence body, to forge from
            forged = type(honest)(**{**{f: getattr(honest, f) for f in honest.__dataclass_fields__}, "peer_id": rogue_id.peer_id})
            payloads = {
                "garbage": b"\x00\xffnot cbor at all",
                "truncated": wire.sign(forged, rogue_id.signing_key)[:-7],
                "signed by another key": wire.sign(forged, other_key),
                "speaks for someone else": wire.sign(honest, rogue_id.signing_key),
                "oversize": b"\xa0" * 20000,
            }
            reasons = {"malformed", "bad_signature", "wrong_origin", "oversize"}
            with trio.fail_after(STEP):
                # publish until every kind is counted: the first messages can go out
                # before the gossip streams between the two hosts are set up
                while not reasons <= set(victim.dropped):
                    for data in payloads.values():
                        await rogue.pubsub.publish(PRESENCE_TOPIC, data)
                    await trio.sleep(0.2)
            assert rogue_id.peer_id not in states(victim)
            assert rogue_id.peer_id not in states(friend)  # rejected messages are not forwarded either
        # still working: the friend is alive and fresh presence keeps arriving
        seq = victim.table.peers[friend.peer_id].seq
        await wait_until(lambda: victim.table.peers[friend.peer_id].seq > seq, STEP, "fresh presence")


@pytest.mark.waits
async def test_a_peer_whose_gossip_stopped_coming_is_reconnected_and_heard_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshnode.net.host import to_libp2p_id

    monkeypatch.setattr(peers, "GOSSIP_SILENCE", 2.0)  # 5 minutes in a node; here 3 presence intervals decide
    async with open_node(node_config(tmp_path, "a")) as a, open_node(
        node_config(tmp_path, "b", bootstrap=tuple(a.dial_addrs))
    ) as b:
        def heard_since(moment: float) -> bool:
            record = b.table.peers.get(a.peer_id)
            return record is not None and record.gossip_heard is not None and record.gossip_heard > moment

        await wait_until(lambda: heard_since(0.0), MEET, "b to hear a by gossip")
        # What py-libp2p's pubsub does when a write fails on a restarted peer's old stream: it forgets the
        # subscription the peer announced on its new connection, and never sends it anything again.
        a.host.pubsub._forget_all_subscriptions(to_libp2p_id(b.peer_id))
        broke_at = time.monotonic()
        (row,) = b.peers()
        assert row["state"] == "alive" and row["connected"]  # nothing but the silence shows it

        def heard_on_a_new_connection() -> bool:
            record = b.table.peers[a.peer_id]  # its connection dropped (or a new one made) after the break ...
            return record.gossip_due > broke_at and heard_since(record.gossip_due)  # ... and gossip on it since

        await wait_until(heard_on_a_new_connection, MEET, "b to reconnect to a and hear it by gossip again")
        assert states(a)[b.peer_id] == "alive" and states(b)[a.peer_id] == "alive"
        (row,) = b.peers()
        assert row["gossip_heard_s"] is not None and row["gossip_heard_s"] < MEET


@pytest.mark.waits
async def test_private_swarm_keeps_strangers_out(tmp_path: Path) -> None:
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    from meshnode.net.swarm_key import format_swarm_key

    key_a.write_text(format_swarm_key())
    key_b.write_text(format_swarm_key())
    fast = {"presence_interval": 0.2}  # the window below is 8 presence intervals: a stranger let in is heard in it
    async with open_node(node_config(tmp_path, "m1", swarm_key=key_a, **fast)) as m1:
        boot = tuple(m1.dial_addrs)
        async with open_node(node_config(tmp_path, "m2", swarm_key=key_a, bootstrap=boot, **fast)) as m2, open_node(
            node_config(tmp_path, "wrong", swarm_key=key_b, bootstrap=boot, **fast)
        ) as wrong, open_node(node_config(tmp_path, "none", bootstrap=boot, **fast)) as none:
            await wait_until(lambda: states(m1).get(m2.peer_id) == "alive", MEET, "the members to meet")
            await trio.sleep(8 * fast["presence_interval"])  # what the test asserts: nothing happens in this window
            for member in (m1, m2):
                assert wrong.peer_id not in states(member) and none.peer_id not in states(member)
            for outsider in (wrong, none):
                assert m1.peer_id not in states(outsider) and m2.peer_id not in states(outsider)


async def test_peer_reputation_is_persisted_and_shown_with_the_peer(tmp_path: Path) -> None:
    async with open_node(node_config(tmp_path, "b")) as b:
        async with open_node(node_config(tmp_path, "a", bootstrap=tuple(b.dial_addrs))) as a:
            a.reputation.record_failure(b.peer_id)
            a_id = a.peer_id
            await wait_until(lambda: states(a).get(b.peer_id) == "alive" == states(b).get(a_id), MEET, "them to meet")
        await wait_until(lambda: states(b).get(a_id) == "gone", STEP, "b to see a leave")
        async with open_node(node_config(tmp_path, "a", bootstrap=tuple(b.dial_addrs))) as a:  # restarted at once
            took = await wait_until(lambda: len(a.table.alive()) == 1, MEET, "b to be seen again")
            # heard on the new connection, not only after the silent one was dropped and redialled
            assert took < SILENT_CONNECTION_LIMIT, f"b was heard again after {took:.1f} s"
            (row,) = a.peers()
            assert row["reputation"] == {"agreements": 0, "disagreements": 0, "failures": 1, "score": 0.333, "barred": False}
