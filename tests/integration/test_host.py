"""``open_host`` over loopback: what a stopped host leaves behind."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import trio

from meshnode.net.libp2p_adapter import port_is_free
from meshnode.node.mesh_node import open_node

from .conftest import node_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_a_stopped_node_frees_its_port_whether_it_stopped_or_was_cancelled(tmp_path: Path) -> None:
    port = free_port()
    config = node_config(tmp_path, "n", listen=(f"/ip4/127.0.0.1/tcp/{port}",))
    async with open_node(config):
        assert not refuses_connections(port)
    assert refuses_connections(port) and port_is_free("127.0.0.1", port)
    with trio.CancelScope() as crash:
        async with open_node(config):  # the same port again, at once
            crash.cancel()  # no goodbye: the way out of a crash
    assert refuses_connections(port) and port_is_free("127.0.0.1", port)


async def test_every_peer_mdns_heard_of_is_read_from_its_cache(tmp_path: Path) -> None:
    # libp2p announces an mDNS find once, and only if resolving it succeeds in time; the node
    # also reads zeroconf's cache, so a find lost on a busy machine is dialled later all the same
    from ..waiting import STEP

    async with open_node(node_config(tmp_path, "a", mdns=True)) as a, open_node(node_config(tmp_path, "b", mdns=True)) as b:
        await b.host.announce_mdns()  # again, as the node does now and then; harmless to repeat
        with trio.fail_after(STEP):
            while not any(peer == b.peer_id and addrs for peer, addrs in await a.host.mdns_peers()):
                await trio.sleep(0.2)
        found = dict(await a.host.mdns_peers())
        assert set(found[b.peer_id]) <= set(b.host.advertised_addrs)


async def test_a_node_whose_mdns_registration_was_lost_registers_it_when_it_announces(tmp_path: Path) -> None:
    # libp2p registers the service once and only logs when zeroconf is too busy to finish in time
    from meshnode.net.libp2p_adapter import _on_zeroconf_loop

    from ..waiting import STEP

    async def registered(host: Any) -> bool:
        async def check(mdns: Any, zc: Any) -> bool:
            return zc.registry.async_get_info_name(mdns.broadcaster.service_info.key) is not None

        return bool(await _on_zeroconf_loop(host, check, STEP))

    async def lose(mdns: Any, zc: Any) -> None:
        zc.registry.async_remove(mdns.broadcaster.service_info)

    async with open_node(node_config(tmp_path, "a", mdns=True)) as a, open_node(node_config(tmp_path, "b", mdns=True)) as b:
        assert await registered(b.host._host)
        await _on_zeroconf_loop(b.host._host, lose, STEP)
        assert not await registered(b.host._host)
        assert await b.host.announce_mdns() is True
        assert await registered(b.host._host) and await b.host.announce_mdns() is False
        with trio.fail_after(STEP):
            while not any(peer == b.peer_id for peer, _ in await a.host.mdns_peers()):
                await trio.sleep(0.2)
