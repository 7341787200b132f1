"""A peer that vanished is redialled at the address it advertised, with backoff, and said unreachable once."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from meshnode.net.host import to_libp2p_id
from meshnode.node.mesh_node import MeshNode, open_node

from ..waiting import wait_until
from .conftest import node_config

WINDOW = 10.0  # seconds of dials counted after the peer vanished


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_tcp_dials(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str]]:
    """Every TCP connect libp2p makes from now on in this process: (monotonic time, multiaddr)."""
    from libp2p.transport.tcp.tcp import TCP

    dials: list[tuple[float, str]] = []
    original = TCP.dial

    async def dial(self: Any, maddr: Any, *args: Any, **kwargs: Any) -> Any:
        dials.append((time.monotonic(), str(maddr)))
        return await original(self, maddr, *args, **kwargs)

    monkeypatch.setattr(TCP, "dial", dial)
    return dials


def plant_stale_address(node: MeshNode, peer: MeshNode, port: int) -> None:
    """Put a dead address for ``peer`` ahead of its real ones, as a connection from its earlier run leaves one."""
    import multiaddr

    peerstore = node.host._host.get_peerstore()
    pid = to_libp2p_id(peer.peer_id)
    real = peerstore.addrs(pid)
    peerstore.clear_addrs(pid)
    peerstore.add_addrs(pid, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"), *real], 7200)


def said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


@pytest.mark.waits
async def test_a_vanished_peer_is_redialled_at_its_advertised_address_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshnode")
    port, stale_port = free_port(), free_port()
    async with open_node(node_config(tmp_path, "a")) as a:
        b_config = node_config(tmp_path, "b", listen=(f"/ip4/127.0.0.1/tcp/{port}",), bootstrap=tuple(a.dial_addrs))
        with trio.CancelScope() as doomed:
            async with open_node(b_config) as b:
                b_id = b.peer_id
                await wait_until(lambda: any(r.peer == b_id and r.connected for r in a.table.alive()), 10, "b to join")
                plant_stale_address(a, b, stale_port)
                dials = count_tcp_dials(monkeypatch)
                doomed.cancel()  # no goodbye: as if the process died
        vanished = time.monotonic()
        await wait_until(lambda: not a.host.is_connected(b_id), 10, "a to see the connection close")
        await trio.sleep(max(0.0, vanished + WINDOW - time.monotonic()))  # the window itself is what is measured
        in_window = [addr for at, addr in dials if at <= vanished + WINDOW]
        # a dial 1, 2, 4 s apart (+-20 %) fits at most four in 10 s; the swarm's own retries
        # and a redial every 5 s made 8 to 12, all to the stale port
        assert 2 <= len(in_window) <= 5, in_window
        assert all(f"/tcp/{port}/" in addr for addr in in_window), in_window
        assert said(caplog, "peer unreachable") == 1

        async with open_node(node_config(tmp_path, "b", listen=(f"/ip4/127.0.0.1/tcp/{port}",))) as b:  # it is back
            await wait_until(lambda: any(r.peer == b_id and r.connected for r in a.table.alive()), 30, "a to redial b")
            await wait_until(lambda: said(caplog, "peer reachable again") == 1, 5, "a to say so")
            assert said(caplog, "peer unreachable") == 1
