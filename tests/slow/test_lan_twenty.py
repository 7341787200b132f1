"""Twenty nodes on a simulated LAN find each other by mDNS alone.

Each node is a real ``python -m meshnode`` process in a network namespace of its own
(tests/slow/netns.py), with the default settings. The test reads each node's peer table from its
local API, which listens on 127.0.0.1 inside the node's namespace: the request's socket is made in
that namespace (``inside``), so one process can ask all twenty without a ``meshnode peers`` start-up
(0.3 s of CPU each, which twenty nodes starting on two cores cannot spare) per question.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from meshnode.storage.identity import load_or_create_identity

from ..waiting import MEET, poll
from .netns import Lan, inside, lan_factory  # noqa: F401  (lan_factory is a fixture)

pytestmark = pytest.mark.slow

NODES = 20
PORT = 7350
# Twenty Python processes importing libp2p take about 14 s of both cores on an idle machine, several
# times that on a busy one; once all are up, the tables fill in about 5 s (benchmarks/lan.py).
DEADLINE = 5 * MEET


def peer_states(ns: str, data_dir: Path) -> dict[str, str] | None:
    """The node's peer table as ``{peer_id: state}``, or None while its API does not answer."""
    try:
        api = json.loads((data_dir / "api.json").read_text())
        host, port = api["url"].removeprefix("http://").rsplit(":", 1)
        with inside(ns):
            sock = socket.create_connection((host, int(port)), timeout=10)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.sock = sock
        try:
            conn.request("GET", "/v1/peers", headers={"Authorization": f"Bearer {api['token']}"})
            response = conn.getresponse()
            peers = json.loads(response.read())["peers"] if response.status == 200 else None
        finally:
            conn.close()
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    return None if peers is None else {p["peer_id"]: p["state"] for p in peers}


def test_twenty_nodes_fill_their_tables_by_mdns_alone(lan_factory: Callable[[int], Lan], tmp_path: Path, capsys: Any) -> None:
    lan = lan_factory(NODES)
    dirs = [tmp_path / f"n{i}" for i in range(1, NODES + 1)]
    ids = [str(load_or_create_identity(d).peer_id) for d in dirs]
    started = time.monotonic()
    procs = [
        lan.run(ns, [sys.executable, "-m", "meshnode", "--data-dir", str(d), "--listen", f"/ip4/{lan.ips[ns]}/tcp/{PORT}",
                     "--api", "127.0.0.1:0"], name=d.name)
        for ns, d in zip(lan.hosts, dirs, strict=True)
    ]  # fmt: skip
    last: list[dict[str, str] | None] = [None] * NODES

    def full() -> bool:
        assert all(p.poll() is None for p in procs), "a node exited:\n" + "\n".join(p.stderr_tail(10) for p in procs if p.poll() is not None)
        with ThreadPoolExecutor(8) as pool:
            last[:] = pool.map(peer_states, lan.hosts, dirs)
        return all(
            table is not None and all(table.get(other) == "alive" for other in ids if other != me)
            for me, table in zip(ids, last, strict=True)
        )

    def report() -> str:
        alive = sum(sum(s == "alive" for s in (t or {}).values()) for t in last)
        lonely = [d.name for d, t in zip(dirs, last, strict=True) if not t]
        return f"{alive} of {NODES * (NODES - 1)} entries alive; nodes listing nobody: {lonely}\n" + procs[0].stderr_tail(15)

    poll(full, DEADLINE, "every node to list the other nineteen as alive", every=1.0, report=report)
    with capsys.disabled():
        print(f"\n[lan] {NODES} nodes started together, mDNS only: full peer tables after {time.monotonic() - started:.1f} s")
