"""The mesh on a simulated LAN: mDNS discovery, crash and silent-vanish detection, private swarms.

Every node is a real ``python -m meshnode`` process in its own network
namespace (tests/slow/netns.py), and every observation goes through the real
``peers --json`` command run in the node's namespace. Waits poll against a
deadline (tests/waiting.py); the only fixed wait is the "nothing happens" window
of the private swarm test, which is what that test asserts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meshnode.core.peers import GONE_INTERVALS, LOST_UNIT
from meshnode.net.libp2p_adapter import SILENT_HOST_DETECTED
from meshnode.storage.identity import load_or_create_identity

from ..waiting import MEET, STEP, poll
from .netns import lan_factory  # noqa: F401  (a fixture)
from .netns import NEIGHBOUR_SYSCTLS, Lan, NetnsUnavailable, NsProcess, simulated_lan

pytestmark = pytest.mark.slow

# A crashed peer's connections close at once, a silent one's when TCP keepalive gives up
# (SILENT_HOST_DETECTED); it is stale 3 s and gone 10 s after (LOST_UNIT). A round of `peers`
# calls, the only way these tests see a state, costs ~0.3 s of Python start-up each on an idle
# machine and seconds on a busy one; the 7 s a peer shows stale must hold several rounds.
QUIET_WINDOW = 4.0  # seconds the private-swarm test watches for a leak (a stranger let in is heard at once)
PORT = 7350
POLL = 0.2  # pause between two rounds of `peers` calls

# Start-up (~3.5 s for three nodes on 2 cores, mDNS announcement included), ~1.3 s until the
# neighbours hear the announcement, a dial, a presence: ~4 s measured on an idle machine.
DISCOVERY_DEADLINE = MEET
TIMEOUT_DEADLINE = SILENT_HOST_DETECTED + GONE_INTERVALS * LOST_UNIT + STEP  # stale, then gone, after it fell silent
JOIN_DEADLINE = MEET  # a node (re)starting next to running ones
REJOIN_DEADLINE = MEET  # after the link comes back: a redial (every 5 s at most), a presence


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    data_dir: Path
    peer_id: str
    proc: NsProcess | None = None

    @property
    def addr(self) -> str:
        return f"/ip4/{self.ip}/tcp/{PORT}/p2p/{self.peer_id}"

    def __str__(self) -> str:
        return f"{self.name} ({self.ip}, …{self.peer_id[-6:]})"


@dataclass
class Mesh:
    """The nodes of one LAN, what they last reported, and a readable account of it for failures."""

    lan: Lan
    root: Path
    nodes: list[Node] = field(default_factory=list)
    last: dict[str, dict[str, dict[str, Any]] | None] = field(default_factory=dict)  # node -> peer id -> record

    def __post_init__(self) -> None:
        for i, ns in enumerate(self.lan.hosts, 1):
            data_dir = self.root / f"n{i}"
            peer_id = str(load_or_create_identity(data_dir).peer_id)  # the key the node will use
            self.nodes.append(Node(f"n{i}", ns, self.lan.ips[ns], data_dir, peer_id))

    def start(self, node: Node, *extra: str) -> None:
        argv = [
            sys.executable, "-m", "meshnode", "--data-dir", str(node.data_dir),
            "--listen", f"/ip4/{node.ip}/tcp/{PORT}", "--api", "127.0.0.1:0",
            *extra,
        ]  # fmt: skip
        node.proc = self.lan.run(node.ns, argv, name=node.name)

    def wait_api(self, node: Node, timeout: float = JOIN_DEADLINE) -> None:
        """Wait until this very process has published its API (the node is fully up, mDNS included)."""
        api_file = node.data_dir / "api.json"

        def up() -> bool:
            assert node.proc is not None and node.proc.poll() is None, f"{node} exited\n{self.report()}"
            try:
                return bool(json.loads(api_file.read_text())["pid"] == node.proc.pid)
            except (OSError, ValueError, KeyError):
                return False

        self.wait_until(f"{node} serves its API", up, timeout)

    def kill(self, node: Node) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    # --- observing ---------------------------------------------------------------------------

    def table(self, node: Node) -> dict[str, dict[str, Any]] | None:
        """The node's peer table by peer ID, or None while its API is not up."""
        argv = [sys.executable, "-m", "meshnode", "peers", "--data-dir", str(node.data_dir), "--json"]
        result = self.lan.call(node.ns, argv)
        table = {p["peer_id"]: p for p in json.loads(result.stdout)} if result.returncode == 0 else None
        self.last[node.name] = table
        return table

    def tables(self, nodes: Iterable[Node]) -> dict[str, dict[str, dict[str, Any]] | None]:
        """Ask several nodes at once (the calls overlap, so one round samples them all close together)."""
        nodes = list(nodes)
        with ThreadPoolExecutor(len(nodes)) as pool:
            return dict(zip((n.name for n in nodes), pool.map(self.table, nodes), strict=True))

    def sees(self, observer: Node, peer: Node, state: str = "alive") -> bool:
        table = self.last.get(observer.name)
        return table is not None and table.get(peer.peer_id, {}).get("state") == state

    def full_mesh(self, nodes: list[Node]) -> bool:
        self.tables(nodes)
        return all(self.sees(a, b) for a in nodes for b in nodes if a is not b)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float, every: float = POLL) -> None:
        poll(check, timeout, what, every=every, report=self.report)

    def state(self, observer: Node, peer: Node) -> str:
        """How ``observer`` listed ``peer`` when it was last asked."""
        return str((self.last.get(observer.name) or {}).get(peer.peer_id, {}).get("state", "absent"))

    def watch_timeout(self, peer: Node, observers: list[Node]) -> None:
        """Poll until every observer lists ``peer`` as gone; each must have shown it stale first.

        Call it right after ``peer`` fell silent: what the observers last showed (before it did)
        starts their record.
        """
        # observer -> distinct states, in order
        seen: dict[str, list[str]] = {o.name: [self.state(o, peer)] for o in observers}

        def all_gone() -> bool:
            for name, table in self.tables(observers).items():
                state = (table or {}).get(peer.peer_id, {}).get("state", "absent")
                if not seen[name] or seen[name][-1] != state:
                    seen[name].append(state)
            return all(states[-1] == "gone" for states in seen.values())

        self.wait_until(f"{', '.join(map(str, observers))} mark {peer} gone", all_gone, TIMEOUT_DEADLINE)
        for name, states in seen.items():
            assert states[:1] == ["alive"] and "stale" in states and states.index("stale") < states.index("gone"), (
                f"{name} should have shown {peer} alive, then stale, then gone; it showed {' -> '.join(states)}\n"
                f"{self.report()}"
            )

    def report(self) -> str:
        """Each node's last reported peer table and the tail of its log."""
        names = {n.peer_id: n.name for n in self.nodes}
        out = []
        for n in self.nodes:
            table = self.last.get(n.name)
            rows = (
                "API not answering"
                if table is None
                else ", ".join(
                    f"{names.get(pid, pid[-6:])}={p['state']}{'' if p['connected'] else '/unconnected'}"
                    for pid, p in table.items()
                )
                or "no peers"
            )
            status = "not started" if n.proc is None else f"exit {n.proc.poll()}" if n.proc.poll() is not None else "running"
            log = n.proc.stderr_tail(15) if n.proc else ""
            out.append(f"--- {n} [{status}] peers: {rows}\n{log}")
        return "\n".join(out)


def _all_others(mesh: Mesh, peer: Node, observers: list[Node], **expect: Any) -> Callable[[], bool]:
    """A check: every observer lists ``peer`` with the given field values."""

    def check() -> bool:
        tables = mesh.tables(observers)
        return all(
            (rec := (tables[o.name] or {}).get(peer.peer_id)) is not None and all(rec[k] == v for k, v in expect.items())
            for o in observers
        )

    return check


def test_a_lan_makes_room_for_its_hosts_in_the_kernel_s_shared_neighbour_table() -> None:
    # one ARP table for every namespace, 1,024 entries by default: 50 hosts need 2,450, and with the
    # default some pairs could not reach each other at all ("neighbor table overflow")
    limit = NEIGHBOUR_SYSCTLS / "gc_thresh3"
    before = int(limit.read_text())
    try:
        with simulated_lan(4):
            assert int(limit.read_text()) == before + 4 * 4 * 4
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    assert int(limit.read_text()) == before


def test_mdns_discovery_then_crash(lan_factory: Callable[[int], Lan], tmp_path: Path, capsys: Any) -> None:
    lan = lan_factory(3)
    mesh = Mesh(lan, tmp_path)
    n1, n2, n3 = mesh.nodes

    # a. Three machines power up together and find each other by mDNS alone.
    started = time.monotonic()
    for n in mesh.nodes:
        mesh.start(n)
    # A slow poll: `peers` calls cost CPU the starting nodes need.
    mesh.wait_until("every node lists the other two as alive", lambda: mesh.full_mesh(mesh.nodes), DISCOVERY_DEADLINE, every=0.5)
    with capsys.disabled():
        print(f"\n[lan] 3 nodes started together, mDNS only: full peer tables after {time.monotonic() - started:.1f} s")

    # b. A node crashes (SIGKILL: no goodbye); the survivors time it out.
    mesh.kill(n3)
    mesh.watch_timeout(n3, [n1, n2])


def test_silent_vanish_and_return(lan_factory: Callable[[int], Lan], tmp_path: Path, capsys: Any) -> None:
    lan = lan_factory(3)
    mesh = Mesh(lan, tmp_path)
    n1, n2, n3 = mesh.nodes
    for n in mesh.nodes:
        mesh.start(n)
    mesh.wait_until("every node lists the other two as alive", lambda: mesh.full_mesh(mesh.nodes), DISCOVERY_DEADLINE, every=0.5)

    # c. A node's link goes down: no FIN, no RST, its connections just stop carrying anything.
    lan.link_down(n3.ns)
    mesh.watch_timeout(n3, [n1, n2])
    mesh.wait_until(
        f"the others drop their connections to the vanished {n3}",
        _all_others(mesh, n3, [n1, n2], state="gone", connected=False),
        STEP,
    )

    # The link comes back: having been timed out must not keep the node out of the mesh.
    lan.link_up(n3.ns)
    back = time.monotonic()
    mesh.wait_until("the node and the others list each other as alive again", lambda: mesh.full_mesh(mesh.nodes), REJOIN_DEADLINE)
    with capsys.disabled():
        print(f"\n[lan] the vanished node rejoined {time.monotonic() - back:.1f} s after its link came back")


def test_restart_on_the_same_port(lan_factory: Callable[[int], Lan], tmp_path: Path) -> None:
    lan = lan_factory(2)
    mesh = Mesh(lan, tmp_path)
    server, client = mesh.nodes
    # The client dials the server, so the server's listening port holds an accepted connection.
    mesh.start(server, "--no-mdns")
    mesh.wait_api(server)
    mesh.start(client, "--no-mdns", "--bootstrap", server.addr)
    mesh.wait_until("the two nodes list each other as alive", lambda: mesh.full_mesh(mesh.nodes), JOIN_DEADLINE)

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0, f"the node did not stop cleanly\n{mesh.report()}"
    mesh.start(server, "--no-mdns")  # a restart, as after an upgrade

    def back() -> bool:
        # Its old connections sit in TIME_WAIT on this port, and its peer's dials failed while it
        # was down: neither may keep it out.
        assert server.proc is not None and server.proc.poll() is None, f"the restarted node exited\n{mesh.report()}"
        return mesh.full_mesh(mesh.nodes)

    mesh.wait_until("the restarted node and its peer list each other as alive", back, JOIN_DEADLINE)


def test_private_swarm_keeps_strangers_out(lan_factory: Callable[[int], Lan], tmp_path: Path) -> None:
    lan = lan_factory(3)
    ours, theirs = tmp_path / "ours.key", tmp_path / "theirs.key"
    for key in (ours, theirs):
        subprocess.run([sys.executable, "-m", "meshnode", "swarm-key", "-o", str(key)], check=True, capture_output=True)
    mesh = Mesh(lan, tmp_path)
    a, b, stranger = mesh.nodes

    mesh.start(a, "--swarm-key", str(ours))
    mesh.start(b, "--swarm-key", str(ours))
    mesh.start(stranger, "--swarm-key", str(theirs))
    mesh.wait_until(f"{a} and {b} list each other as alive", lambda: mesh.full_mesh([a, b]), DISCOVERY_DEADLINE, every=0.5)
    mesh.wait_api(stranger)

    # For a while more, every sample must show the stranger and the pair apart.
    window_end = time.monotonic() + QUIET_WINDOW
    while True:
        tables = mesh.tables(mesh.nodes)
        assert all(t is not None for t in tables.values()), f"a node stopped answering\n{mesh.report()}"
        leaks = [f"{o} lists {p}" for o, p in ((a, stranger), (b, stranger), (stranger, a), (stranger, b))
                 if p.peer_id in (tables[o.name] or {})]  # fmt: skip
        assert not leaks, f"nodes with different swarm keys met: {'; '.join(leaks)}\n{mesh.report()}"
        if time.monotonic() > window_end:
            break
        time.sleep(POLL)
