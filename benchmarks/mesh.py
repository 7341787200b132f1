"""Mesh figures: what an idle node costs in memory, how long a LAN takes to fill its peer tables, and
how much presence traffic each node sends as the mesh grows.

    sudo .venv/bin/python benchmarks/mesh.py          # root: the LAN and traffic parts use network namespaces

Needs ``pip install -e '.[test]'`` (it reuses tests/slow/netns.py). Prints a Markdown report;
docs/benchmarks.md holds the latest one. Every namespace and process it makes is removed on exit,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.slow.netns import NetnsUnavailable, NsProcess, isolated_namespace, simulated_lan  # noqa: E402

NODE = [sys.executable, "-m", "meshnode"]
MiB = 1 << 20
CONVERGE_TIMEOUT = 60.0  # for the traffic figures: how long N nodes in one process get to fill their tables


# --- memory -----------------------------------------------------------------------------------


def wait_for_api(data_dir: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the node has written its api.json (it is fully up); raises if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not (data_dir / "api.json").exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with status {proc.poll()} before its API was up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node's API was not up within {timeout:g} s")
        time.sleep(0.05)


def memory(idle_s: float) -> list[str]:
    """RSS of an idle node next to a process that only imports libp2p and trio, both measured in this run."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmp:
            data_dir = Path(tmp)
            node = subprocess.Popen(
                [*NODE, "--data-dir", tmp, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--api", "127.0.0.1:0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(node)
            bare = subprocess.Popen([sys.executable, "-c", "import time, libp2p, trio; time.sleep(3600)"])
            procs.append(bare)
            wait_for_api(data_dir, node)
            time.sleep(idle_s)
            rows = []
            for label, p in (("`import libp2p, trio`, then sleep", bare), ("`python -m meshnode`, idle, no peers", node)):
                info = psutil.Process(p.pid)
                rows.append((label, info.memory_info().rss, info.num_threads()))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    out = [f"Resident memory after {idle_s:g} s up (loopback, mDNS off, local API on):", "",
           "| process | RSS MiB | threads |", "|---|---|---|"]  # fmt: skip
    out += [f"| {label} | {rss / MiB:.1f} | {threads} |" for label, rss, threads in rows]
    out.append(f"| **what the node adds** | **{(rows[1][1] - rows[0][1]) / MiB:+.1f}** | |")
    return out


# --- discovery on a LAN -------------------------------------------------------------------------


def joined_peers(proc: NsProcess) -> set[str]:
    """Peer IDs the node has logged as joined (it runs with --log-json)."""
    peers = set()
    for line in proc.stderr_path.read_text(errors="replace").splitlines():
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        if msg.startswith("peer joined"):
            peers.add(msg.split()[2])
    return peers


def lan_run(hosts: int, timeout: float) -> tuple[float, float]:
    """One fresh LAN, every node started at once: (slowest start-up, full peer tables), seconds from the start.

    Progress is read from the nodes' own logs, so measuring costs them no CPU.
    """
    with simulated_lan(hosts) as lan, tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmp:
        dirs = [Path(tmp) / f"n{i}" for i in range(hosts)]
        start = time.monotonic()
        procs = [
            lan.run(ns, [*NODE, "--data-dir", str(d), "--listen", f"/ip4/{lan.ips[ns]}/tcp/7350", "--log-json"])
            for ns, d in zip(lan.hosts, dirs, strict=True)
        ]
        up: float | None = None
        while True:
            elapsed = time.monotonic() - start
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a node exited:\n" + "\n".join(p.stderr_tail(5) for p in procs))
            if up is None and all((d / "api.json").exists() for d in dirs):
                up = elapsed
            if all(len(joined_peers(p)) >= hosts - 1 for p in procs):
                return up or elapsed, elapsed
            if elapsed > timeout:
                raise RuntimeError(f"no full peer tables after {timeout:g} s")
            time.sleep(0.1)


def lan_discovery(runs: int) -> list[str]:
    results = [lan_run(3, timeout=120) for _ in range(runs)]
    ups, full = [r[0] for r in results], [r[1] for r in results]
    return [
        f"3-node LAN (network namespaces on a bridge), mDNS only, default presence interval, all nodes "
        f"started at once; median of {runs} runs:",
        "",
        "| from the start until | median s | runs |",
        "|---|---|---|",
        f"| every node is up (API served) | {statistics.median(ups):.1f} | {', '.join(f'{u:.1f}' for u in ups)} |",
        f"| every node lists the other two as alive | {statistics.median(full):.1f} | {', '.join(f'{f:.1f}' for f in full)} |",
    ]


# --- presence traffic ---------------------------------------------------------------------------


def gossip(sizes: list[int], seconds: float) -> list[str]:
    rows = []
    for n in sizes:
        with isolated_namespace() as ns:
            argv = [sys.executable, str(Path(__file__).resolve()), "--inner-gossip", str(n), "--seconds", str(seconds)]
            proc = ns.run(argv, name=f"gossip-{n}")
            try:
                code = proc.wait(CONVERGE_TIMEOUT + seconds + 120)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{n} nodes: the measurement did not finish\n{proc.stderr_tail()}") from None
            if code != 0:
                raise RuntimeError(f"{n} nodes: the measurement failed\n{proc.stderr_tail()}")
            rows.append(json.loads(proc.stdout().splitlines()[-1]))
    out = [
        f"N nodes in one process on loopback, in a namespace of their own (so `lo` carries only their traffic), "
        f"default presence interval, node i bootstrapped to node 0; measured over {seconds:g} s once every node "
        f"lists all others as alive (or after {CONVERGE_TIMEOUT:g} s if that never happens). Bytes are everything "
        "on the wire: presence gossip, gossipsub control, pings, TCP/IP headers. One process runs all N nodes "
        "on one core, so its CPU is N nodes' worth.",
        "",
        "| N | full tables after s | alive entries at the end | bytes/s per node | packets/s per node "
        "| bytes/s per node per peer | CPU % of a core, all N nodes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, per_node = r["nodes"], r["bytes"] / r["seconds"] / r["nodes"]
        converged = "never" if r["converged_s"] is None else f"{r['converged_s']:.1f}"
        out.append(
            f"| {n} | {converged} | {r['alive_fraction']:.0%} | {per_node:,.0f} | {r['packets'] / r['seconds'] / n:.0f} "
            f"| {per_node / (n - 1):,.0f} | {r['cpu_s'] / r['seconds'] * 100:.0f} |"
        )
    ok = [r for r in rows if r["converged_s"] is not None]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        growth = (b["bytes"] / b["nodes"]) / (a["bytes"] / a["nodes"])
        out += ["", f"From {a['nodes']} to {b['nodes']} nodes ({b['nodes'] / a['nodes']:g}x), the traffic per node "
                f"grows {growth:.1f}x. One signed presence message is {rows[0]['presence_bytes']} B."]  # fmt: skip
    return out


def gossip_inner(n: int, seconds: float) -> dict[str, Any]:
    """Runs inside the namespace: start n nodes, wait for full tables, count the bytes on lo."""
    import trio

    from meshnode.cli.logs import configure_logging
    from meshnode.config import NodeConfig
    from meshnode.core import wire
    from meshnode.node.mesh_node import open_node

    configure_logging("error")
    stats = Path("/sys/class/net/lo/statistics")

    def counters() -> tuple[int, int]:
        return int((stats / "tx_bytes").read_text()), int((stats / "tx_packets").read_text())

    async def main(tmp: Path) -> dict[str, Any]:
        def config(i: int, bootstrap: tuple[str, ...]) -> NodeConfig:
            return NodeConfig(data_dir=tmp / f"n{i}", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, api=None, bootstrap=bootstrap)

        def alive_fraction() -> float:
            alive: int = sum(p["state"] == "alive" for node in nodes for p in node.peers())
            return alive / (n * (n - 1))

        async with AsyncExitStack() as stack:
            start = time.monotonic()
            first = await stack.enter_async_context(open_node(config(0, ())))
            nodes = [first]
            for i in range(1, n):
                nodes.append(await stack.enter_async_context(open_node(config(i, (first.dial_addrs[0],)))))
            converged: float | None = None
            with trio.move_on_after(CONVERGE_TIMEOUT):
                while alive_fraction() < 1:
                    await trio.sleep(0.25)
                converged = time.monotonic() - start
                await trio.sleep(5)  # let the gossipsub mesh and the ping streams settle
            me = psutil.Process()
            b0, p0, c0 = *counters(), sum(me.cpu_times()[:2])
            await trio.sleep(seconds)
            b1, p1, c1 = *counters(), sum(me.cpu_times()[:2])
            result = {
                "nodes": n, "seconds": seconds, "converged_s": converged, "alive_fraction": alive_fraction(),
                "bytes": b1 - b0, "packets": p1 - p0, "cpu_s": c1 - c0,
                "presence_bytes": len(wire.sign(first._presence(), first.identity.signing_key)),
            }  # fmt: skip
        return result

    with tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmp:
        return trio.run(main, Path(tmp))


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="LAN discovery runs (default 3)")
    parser.add_argument("--seconds", type=float, default=30.0, help="traffic measuring window (default 30)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 10, 20], help="mesh sizes for the traffic figures")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds a node idles before its RSS is read")
    parser.add_argument("--inner-gossip", type=int, metavar="N", help=argparse.SUPPRESS)  # the re-exec inside a namespace
    args = parser.parse_args()

    if args.inner_gossip:
        print(json.dumps(gossip_inner(args.inner_gossip, args.seconds)), flush=True)
        return

    # SIGTERM unwinds like Ctrl-C, so the context managers remove their namespaces and processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from importlib.metadata import version

    print(f"Machine: {platform.machine()}, CPython {platform.python_version()}, libp2p {version('libp2p')}, "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print("\n".join(memory(args.idle)) + "\n")
    try:
        print("\n".join(lan_discovery(args.runs)) + "\n", flush=True)
        print("\n".join(gossip(args.nodes, args.seconds)))
    except NetnsUnavailable as exc:
        print(f"(LAN and traffic figures skipped: {exc})")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the namespaces and processes are already gone: the context managers saw to it
        print("interrupted", file=sys.stderr)
        sys.exit(130)
