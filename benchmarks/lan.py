"""A LAN of N real nodes on this machine: how long it takes to fill its peer tables, what it costs
while idle, and one job spread across all of it, as N grows.

    sudo .venv/bin/python benchmarks/lan.py                          # N = 10, 20, 50
    sudo .venv/bin/python benchmarks/lan.py --sizes 5 --idle 20 --subtasks 200
    sudo .venv/bin/python benchmarks/lan.py --sizes 10 --no-job --node-arg=--presence-interval=3

For each N, on a fresh LAN (tests/slow/netns.py: one network namespace per host, all on one bridge)
and fresh data dirs, N ``python -m meshnode`` processes start at once, mDNS on, no bootstrap, the
default presence settings plus any ``--node-arg``. Measured, all times from the first node's start:

* up: the last node has written its api.json (it is fully up, mDNS included);
* full tables: every node lists every other node as ``alive`` in ``GET /v1/peers``, asked about
  once a second (asking costs CPU the nodes need). Each node's API listens on 127.0.0.1 inside
  its own namespace, so a sampler thread enters that namespace (setns), creates the request's
  socket there, and goes back: a socket stays in the namespace it was created in;
* idle cost: after ``--settle`` s of full tables, over ``--idle`` s during which nothing asks the
  nodes anything: each node's CPU (utime + stime of the node process, /proc/PID/stat) as % of one
  core, its RSS (VmRSS) at the end, and the bytes and packets its namespace's eth0 received plus
  sent, per second (/proc/PID/net/dev, which shows the process's namespace). Median and max over
  the nodes, the CPU of all nodes together, and the machine's 1-minute load average at the end;
* a job: node 1 submits ``--subtasks`` distinct subtasks of tasks_wasm/monte_carlo_pi.wasm
  (1,000,000 samples each, as examples/monte_carlo_pi.jsonl) with 2 replicas, with
  ``meshnode submit`` run in its namespace; the command's wall time, how many subtasks were
  verified, and which nodes ran accepted work (the ``executors`` of the result lines);
* a join (``--no-join`` to skip): ``--settle`` s after the job (or the idle window), one more node
  starts on a host kept for it, and the tables are read every half second until it lists every
  node and every node lists it. This is what a machine switched on in a working lab meets: on one
  box, the start of all N at once measures mostly N Python start-ups sharing two cores.

When the tables are not full within ``--deadline`` s, the report says how many of the N(N-1)
entries were alive, notes the CPU over the last ``--idle`` s of that wait (while it polled every
node), measures the idle window all the same (after ``--settle`` s, nobody asking), and runs the
job all the same (a mesh that is not quite full is still used). The nodes are then stopped with
SIGTERM and the LAN is torn down.

Needs root, iproute2 and ``pip install -e '.[test]'`` (it reuses tests/slow/netns.py). Prints a
Markdown report on stdout (what was measured so far, if interrupted) and progress on stderr. Every
namespace, process and data dir it makes is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshnode.storage.identity import load_or_create_identity  # noqa: E402
from tests.slow.netns import Lan, NetnsUnavailable, NsProcess, inside, simulated_lan  # noqa: E402

NODE = [sys.executable, "-m", "meshnode"]
PORT = 7350
TASK = ROOT / "tasks_wasm" / "monte_carlo_pi.wasm"
SAMPLES = 1_000_000  # per subtask, as in examples/monte_carlo_pi.jsonl
REPLICAS = 2
POLL = 1.0  # seconds between two rounds of peer-table requests
JOIN_POLL = 0.5  # the same while one more node joins a settled mesh
NEAR_FULL = 0.99  # share of the table entries alive at which the CPU spent so far is reported
API_POLL = 0.2  # seconds between two looks for api.json files (a stat: costs the nodes nothing)
HTTP_TIMEOUT = 5.0  # as the CLI's: a node that takes longer is stuck, or starved
SAMPLER_THREADS = 8
LOOKS_AT = (0.0, 10.0, 30.0, 60.0, 90.0)  # seconds into the job at which every node is asked how it sees the owner
DIAL_PROBES = 3  # at the look 10 s in, nodes with no connection to the owner whose namespace dials it afresh
# A fresh host in a node's namespace (an identity of its own, nothing remembered) dials the owner: a
# plain TCP connect, then a libp2p dial. Whether it gets through tells the owner's side of a failed
# dial from the node's own libp2p state.
DIAL_PROBE = """
import pathlib, socket, sys, tempfile, time
import trio
from meshnode.core.peer_id import PeerId
from meshnode.net.host import open_host
from meshnode.storage.identity import load_or_create_identity
ip, port, owner, listen = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
began = time.monotonic()
socket.create_connection((ip, port), timeout=20).close()
tcp = time.monotonic() - began
async def main():
    async with open_host(load_or_create_identity(pathlib.Path(tempfile.mkdtemp())), [listen]) as host:
        began = time.monotonic()
        try:
            await host.dial(PeerId.from_base58(owner), [f"/ip4/{ip}/tcp/{port}"], timeout=20)
            print(f"TCP connect {tcp * 1000:.0f} ms, libp2p dial {time.monotonic() - began:.1f} s")
        except Exception as exc:
            print(f"TCP connect {tcp * 1000:.0f} ms, libp2p dial failed after {time.monotonic() - began:.1f} s: {exc}")
trio.run(main)
"""
STOP_GRACE = 30.0  # for N nodes to exit after SIGTERM, together, before the teardown kills them
PROGRESS_EVERY = 15.0
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the nodes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """What a node's api.json says: where its API is, its token, its peer ID and its pid."""

    host: str
    port: int
    token: str
    peer_id: str
    pid: int


@dataclass
class Node:
    name: str
    ns: str
    data_dir: Path
    proc: NsProcess
    api: Api | None = None

    @property
    def pid(self) -> int:
        """The node process itself: the one that wrote api.json (``ip netns exec`` execs in place)."""
        return self.api.pid if self.api else self.proc.pid


def start_nodes(lan: Lan, root: Path, extra: Sequence[str], bootstrap: bool = False,
                count: int | None = None) -> list[Node]:  # fmt: skip
    """Start a node on each of the first ``count`` hosts (all by default); with ``bootstrap``, each is also
    given the first node's address (as a ``--bootstrap`` flag: the hellos' hints do the rest), besides mDNS."""
    first = first_address(lan, root) if bootstrap else None  # before n1 starts: its identity is made here
    return [start_node(lan, root, i, extra, first) for i in range(1, (count or len(lan.hosts)) + 1)]


def first_address(lan: Lan, root: Path) -> str:
    """n1's address with its peer ID (its identity made under ``root`` if it has none yet)."""
    return f"/ip4/{lan.ips[lan.hosts[0]]}/tcp/{PORT}/p2p/{load_or_create_identity(root / 'n1').peer_id}"


def start_node(lan: Lan, root: Path, i: int, extra: Sequence[str], bootstrap: str | None = None) -> Node:
    """Node ``n<i>`` on host ``i`` (from 1), its data dir under ``root``; ``bootstrap``: an address to dial."""
    ns, data_dir = lan.hosts[i - 1], root / f"n{i}"
    boot = ["--bootstrap", bootstrap] if bootstrap and i > 1 else []
    argv = [*NODE, "--data-dir", str(data_dir), "--listen", f"/ip4/{lan.ips[ns]}/tcp/{PORT}",
            "--api", "127.0.0.1:0", *boot, *extra]  # fmt: skip
    return Node(f"n{i}", ns, data_dir, lan.run(ns, argv, name=f"n{i}"))


def read_api(data_dir: Path) -> Api | None:
    try:
        info = json.loads((data_dir / "api.json").read_text())
        url = urlsplit(info["url"])
        return Api(url.hostname or "127.0.0.1", url.port or 80, info["token"], info["peer_id"], int(info["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return False


def api_get(node: Node, path: str) -> Any:
    """``GET path`` on the node's API, the socket made in the node's namespace; None if it does not answer."""
    api = node.api
    if api is None:
        return None
    with inside(node.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn = http.client.HTTPConnection(api.host, api.port, timeout=HTTP_TIMEOUT)
    conn.sock = sock  # closed with the connection; connect() is never called on it
    try:
        sock.settimeout(HTTP_TIMEOUT)
        sock.connect((api.host, api.port))
        conn.request("GET", path, headers={"Authorization": f"Bearer {api.token}"})
        response = conn.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def peer_table(node: Node) -> list[dict[str, Any]] | None:
    answer = api_get(node, "/v1/peers")
    return answer.get("peers") if isinstance(answer, dict) else None


# --- peer tables --------------------------------------------------------------------------------------


def alive_counts(nodes: Sequence[Node], tables: Sequence[list[dict[str, Any]] | None]) -> list[int | None]:
    """For each node, how many of the other nodes it lists as alive (None: its API did not answer)."""
    ids = {n.api.peer_id for n in nodes if n.api}
    counts: list[int | None] = []
    for node, table in zip(nodes, tables, strict=True):
        if table is None or node.api is None:
            counts.append(None)
            continue
        others = ids - {node.api.peer_id}
        counts.append(sum(1 for p in table if p.get("peer_id") in others and p.get("state") == "alive"))
    return counts


def describe_tables(counts: Sequence[int | None], n: int) -> str:
    answered = [c for c in counts if c is not None]
    alive = sum(answered)
    text = f"{alive}/{n * (n - 1)} entries alive, {alive / max(1, n * (n - 1)):.0%}"
    if answered:
        median = statistics.median(answered)
        text += f"; a node lists min {min(answered)}, median {median:g}, max {max(answered)} of {n - 1}"
    if len(answered) < len(counts):
        text += f"; {len(counts) - len(answered)} node(s) did not answer"
    return text


# --- cost ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss: int  # bytes
    net_bytes: int  # eth0, received + sent
    net_packets: int
    udp_datagrams: int  # received + sent in the node's namespace: mDNS is all of its UDP


@dataclass(frozen=True)
class Snapshot:
    at: float
    usage: dict[str, Usage]  # node name -> usage; a node whose process is gone is absent
    machine: tuple[int, int]  # (busy, total) CPU ticks of the whole machine, all cores


def machine_ticks() -> tuple[int, int]:
    """From /proc/stat: (busy, total) ticks of every core, busy being all but idle and iowait."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def eth0_counters(dev: str) -> tuple[int, int]:
    """(bytes, packets), received + sent, from the text of /proc/PID/net/dev."""
    for line in dev.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "eth0":
            f = rest.split()
            return int(f[0]) + int(f[8]), int(f[1]) + int(f[9])
    return 0, 0


def usage_of(pid: int) -> Usage | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        dev = Path(f"/proc/{pid}/net/dev").read_text()
        snmp = Path(f"/proc/{pid}/net/snmp").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # field 3 (state) onwards: utime, stime are fields 14, 15
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return Usage((int(fields[11]) + int(fields[12])) / CLK_TCK, rss, *eth0_counters(dev), udp_datagrams(snmp))


def udp_datagrams(snmp: str) -> int:
    """UDP datagrams received (delivered or not) plus sent, from the text of /proc/PID/net/snmp."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        return 0
    values = dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=False))
    return sum(values.get(k, 0) for k in ("InDatagrams", "NoPorts", "InErrors", "OutDatagrams"))


def snapshot(nodes: Sequence[Node]) -> Snapshot:
    at = time.monotonic()
    usage = {n.name: u for n in nodes if n.proc.poll() is None and (u := usage_of(n.pid)) is not None}
    return Snapshot(at, usage, machine_ticks())


@dataclass(frozen=True)
class Cost:
    seconds: float
    cpu: list[float]  # % of one core, per node
    rss: list[float]  # MiB, per node, at the end
    bytes_s: list[float]  # per node
    packets_s: list[float]  # per node
    udp_s: list[float]  # per node: mDNS datagrams
    machine_busy: float  # % of all cores, whoever used them (the nodes, this script, anything else)
    load1: float
    note: str = ""  # why this is not the idle window, if it is not


def cost_between(a: Snapshot, b: Snapshot, note: str = "") -> Cost:
    dt = max(b.at - a.at, 1e-9)
    names = [name for name in b.usage if name in a.usage]
    ua, ub = [a.usage[k] for k in names], [b.usage[k] for k in names]
    return Cost(
        seconds=dt,
        cpu=[(y.cpu_s - x.cpu_s) / dt * 100 for x, y in zip(ua, ub, strict=True)],
        rss=[y.rss / MiB for y in ub],
        bytes_s=[(y.net_bytes - x.net_bytes) / dt for x, y in zip(ua, ub, strict=True)],
        packets_s=[(y.net_packets - x.net_packets) / dt for x, y in zip(ua, ub, strict=True)],
        udp_s=[(y.udp_datagrams - x.udp_datagrams) / dt for x, y in zip(ua, ub, strict=True)],
        machine_busy=(b.machine[0] - a.machine[0]) / max(1, b.machine[1] - a.machine[1]) * 100,
        load1=os.getloadavg()[0],
        note=note,
    )


# --- one LAN ---------------------------------------------------------------------------------------------


@dataclass
class JobResult:
    subtasks: int
    wall_s: float
    finished: bool
    exit_code: int | None
    verified: int | None  # None: unknown (the job did not finish and the node did not say)
    runs: Counter[str]  # node name -> accepted runs
    idle_nodes: list[str]
    note: str = ""
    looks: str = ""  # how the nodes saw the owner during the job (``describe_looks``)


@dataclass
class JoinResult:
    """One more node started on the settled mesh; times from its API up (its process start for ``up_s``)."""

    up_s: float | None = None  # its API up, from its start
    own_s: float | None = None  # it lists every other node alive
    listed_s: float | None = None  # every other node lists it alive
    full_s: float | None = None  # every table full, the N + 1 nodes'
    note: str = ""


@dataclass
class LanResult:
    n: int
    up_s: float | None = None  # the last node's API up, from the first start
    full_s: float | None = None  # full tables, from the first start
    near_full: tuple[float, float] | None = None  # 99 % of the entries alive: (s from the first start, CPU-s of all nodes)
    tables: str = ""  # what the tables held when they were given up on
    cost: Cost | None = None
    job: JobResult | None = None
    join: JoinResult | None = None
    notes: list[str] = field(default_factory=list)


def wait_until_up(nodes: Sequence[Node], start: float, deadline: float, result: LanResult) -> bool:
    """Until every node has published its API; False (with a note) if one exits or the deadline passes."""
    while True:
        for node in nodes:
            if node.api is None and (api := read_api(node.data_dir)) is not None:
                if api.pid != node.proc.pid and not descends_from(api.pid, node.proc.pid):
                    continue  # not this process's file
                node.api = api
            if node.proc.poll() is not None:
                tail = " / ".join(node.proc.stderr_tail(3).splitlines())
                result.notes.append(f"{node.name} exited ({node.proc.poll()}) before its API was up: `{tail}`")
                return False
        if all(n.api for n in nodes):
            result.up_s = time.monotonic() - start
            return True
        if time.monotonic() - start > deadline:
            down = [n.name for n in nodes if n.api is None]
            result.notes.append(f"API not up within {deadline:g} s on {len(down)} node(s): {', '.join(down)}")
            return False
        time.sleep(API_POLL)


def wait_for_full_tables(
    nodes: Sequence[Node], start: float, deadline: float, pool: ThreadPoolExecutor, result: LanResult
) -> list[Snapshot]:
    """Poll the peer tables until they are full (sets ``result.full_s``) or the deadline passes (sets
    ``result.tables``); returns a cost snapshot per round."""
    n, history = len(nodes), []
    last_progress = time.monotonic()
    while True:
        began = time.monotonic()
        counts = alive_counts(nodes, list(pool.map(peer_table, nodes)))
        now = time.monotonic()
        history.append(snapshot(nodes))
        if result.near_full is None and sum(c or 0 for c in counts) >= NEAR_FULL * n * (n - 1):
            result.near_full = (now - start, sum(u.cpu_s for u in history[-1].usage.values()))
        if all(c == n - 1 for c in counts):
            result.full_s = now - start
            return history
        dead = [x.name for x in nodes if x.proc.poll() is not None]
        if dead or now - start > deadline:
            result.tables = describe_tables(counts, n)
            if dead:
                result.notes.append(f"node(s) exited while the tables filled: {', '.join(dead)}")
            return history
        if now - last_progress > PROGRESS_EVERY:
            say(f"  N={n}: {now - start:.0f} s, {describe_tables(counts, n)}")
            last_progress = now
        time.sleep(max(0.0, POLL - (time.monotonic() - began)))


def cost_of_wait(history: Sequence[Snapshot], window: float) -> Cost | None:
    """The cost over the last ``window`` s of a wait that did not end in full tables."""
    if len(history) < 2:
        return None
    end = history[-1]
    first = next((s for s in history if s.at >= end.at - window), history[0])
    if first is end:
        first = history[-2]
    return cost_between(first, end, note=f"tables never full: over the last {end.at - first.at:.0f} s of the wait")


def run_job(lan: Lan, nodes: Sequence[Node], tmp: Path, subtasks: int, deadline: float) -> JobResult:
    inputs, output = tmp / "inputs.jsonl", tmp / "results.jsonl"
    inputs.write_text("".join(f'{{"seed":{i},"samples":{SAMPLES}}}\n' for i in range(subtasks)))
    owner = nodes[0]
    argv = [*NODE, "submit", str(TASK), "--input-jsonl", str(inputs), "--replicas", str(REPLICAS),
            "--output", str(output), "--data-dir", str(owner.data_dir)]  # fmt: skip
    began = time.monotonic()
    proc = lan.run(owner.ns, argv, name="submit")
    looks: list[Look] = []
    probes: list[str] = []
    code: int | None = None
    with ThreadPoolExecutor(min(len(nodes), SAMPLER_THREADS)) as pool:
        for at in (*LOOKS_AT, deadline):  # how the others see the owner while it has work to hand out
            try:
                code = proc.wait(max(0.0, began + min(at, deadline) - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                if at < deadline:
                    looks.append((at, list(pool.map(lambda node: owner_view(node, owner), nodes[1:]))))
                    if len(looks) == 2:  # 10 s in: thieves apart from the owner then, dialled from their hosts
                        views = zip(nodes[1:], looks[-1][1], strict=True)
                        apart = [n for n, v in views if v and v.listed and not v.connected]
                        probes = list(pool.map(lambda node: dial_probe(lan, node, owner), apart[:DIAL_PROBES]))
                        probes.append(listener_state(lan, owner))
    wall = time.monotonic() - began
    if code is None:
        return unfinished_job(owner, proc, subtasks, wall)
    records = read_records(output)
    runs = Counter(name for r in records if r.get("status") == "ok" for name in executor_names(r, nodes))
    idle = [n.name for n in nodes if n.name not in runs]
    verified = sum(1 for r in records if r.get("status") == "ok")
    note = "" if code == 0 else f"submit exited {code}: {' / '.join(proc.stderr_tail(3).splitlines())}"
    described = "\n".join([describe_looks(looks, nodes, idle), *probes])
    return JobResult(subtasks, wall, True, code, verified, runs, idle, note, described)


def measure_join(lan: Lan, nodes: list[Node], root: Path, args: argparse.Namespace) -> JoinResult:
    """Start one more node on the spare host of a settled mesh and poll every table until it lists everyone
    and everyone lists it. The node is appended to ``nodes``, so it is stopped with the others."""
    joiner = start_node(lan, root, len(nodes) + 1, args.node_arg, first_address(lan, root) if args.bootstrap else None)
    nodes.append(joiner)
    began, joined, scratch = time.monotonic(), JoinResult(), LanResult(len(nodes))
    if not wait_until_up([joiner], began, args.deadline, scratch) or scratch.up_s is None or joiner.api is None:
        joined.note = "; ".join(scratch.notes)
        return joined
    joined.up_s = scratch.up_s
    up, n, me = began + scratch.up_s, len(nodes), joiner.api.peer_id
    with ThreadPoolExecutor(min(n, SAMPLER_THREADS)) as pool:
        while True:
            round_began = time.monotonic()
            tables = list(pool.map(peer_table, nodes))
            now = time.monotonic() - up  # the tables were read before now: an upper bound
            counts = alive_counts(nodes, tables)
            listing = sum(1 for t in tables[:-1] if t and any(p.get("peer_id") == me and p.get("state") == "alive"
                                                               for p in t))
            if joined.own_s is None and counts[-1] == n - 1:
                joined.own_s = now
            if joined.listed_s is None and listing == n - 1:
                joined.listed_s = now
            if all(c == n - 1 for c in counts):
                joined.full_s = now
                return joined
            if now > args.deadline:
                joined.note = (f"{n - 1 - listing} node(s) did not list it after {args.deadline:g} s; "
                               f"{describe_tables(counts, n)}")
                return joined
            time.sleep(max(0.0, JOIN_POLL - (time.monotonic() - round_began)))


def listener_state(lan: Lan, node: Node) -> str:
    """``node``'s TCP listener as its kernel sees it: the accept queue, and the connections its namespace
    dropped for a full queue (TcpExt ListenOverflows and ListenDrops, since the namespace was made)."""
    listening = lan.call(node.ns, ["ss", "-Hltn", f"sport = :{PORT}"]).stdout.split()
    queue = f"{listening[1]} of {listening[2]}" if len(listening) >= 3 else "(no listener)"
    lines = [line.split() for line in lan.call(node.ns, ["cat", "/proc/net/netstat"]).stdout.splitlines()]
    tcp_ext = [line for line in lines if line and line[0] == "TcpExt:"]
    counts = dict(zip(tcp_ext[0][1:], tcp_ext[1][1:], strict=False)) if len(tcp_ext) >= 2 else {}
    return (f"{node.name}'s listener: accept queue {queue}; connections its kernel dropped for a full queue: "
            f"ListenOverflows {counts.get('ListenOverflows', '?')}, ListenDrops {counts.get('ListenDrops', '?')}")


def dial_probe(lan: Lan, node: Node, owner: Node) -> str:
    """From ``node``'s namespace, a fresh host dials the owner (``DIAL_PROBE``); what it met, as a line."""
    if owner.api is None:
        return f"{node.name}: no probe (the owner's peer ID is unknown)"
    argv = [sys.executable, "-c", DIAL_PROBE, lan.ips[owner.ns], str(PORT), owner.api.peer_id,
            f"/ip4/{lan.ips[node.ns]}/tcp/0"]  # fmt: skip
    try:
        done = lan.call(node.ns, argv, timeout=60)
    except subprocess.TimeoutExpired:
        return f"a fresh host in {node.name}'s namespace, dialling the owner: no answer within 60 s"
    said = done.stdout.strip() or " / ".join(done.stderr.strip().splitlines()[-2:])
    return f"a fresh host in {node.name}'s namespace, dialling the owner: {said}"


@dataclass
class OwnerView:
    """How one node saw the job's owner at one moment: from its peer table and its own account of its runs."""

    listed: bool  # the owner is in its table as alive
    connected: bool
    surplus: int  # what the owner's last presence (or steal answer) offered, as this node knows it
    ran: int  # replicas this node had run of any job so far
    renewals_failed: int  # lease renewals it sent that no owner answered, so far
    steals: Counter[str]  # its steal requests so far: asked, failed, refused, and replicas granted
    failures: Counter[str]  # why its steals failed, its five commonest reasons
    gossip: int  # gossip messages it has received (each once), so far


Look = tuple[float, list[OwnerView | None]]  # seconds into the job, and each node's view (None: it did not answer)


def owner_view(node: Node, owner: Node) -> OwnerView | None:
    table, info = peer_table(node), api_get(node, "/v1/node")
    if table is None or not isinstance(info, dict) or owner.api is None:
        return None
    entry = next((p for p in table if p.get("peer_id") == owner.api.peer_id), {})
    ran = sum(int(j.get("replicas", 0)) for j in (info.get("jobs_run") or {}).values())
    return OwnerView(entry.get("state") == "alive", bool(entry.get("connected")), int(entry.get("surplus") or 0), ran,
                     int(info.get("lease_renewals_failed") or 0), Counter(info.get("steals") or {}),
                     Counter(info.get("steal_failures") or {}),
                     int((info.get("gossip") or {}).get("received") or 0))  # fmt: skip


def describe_looks(looks: Sequence[Look], nodes: Sequence[Node], idle: Sequence[str]) -> str:
    """What the nodes that ran nothing knew of the owner while the job ran, against the others."""
    names = [n.name for n in nodes[1:]]
    lines = []
    before: Look | None = None
    for at, views in looks:
        idle_views = [v for name, v in zip(names, views, strict=True) if name in idle]
        working = [v for name, v in zip(names, views, strict=True) if name not in idle]
        lines.append(f"{at:.0f} s into the job: of the {len(idle_views)} nodes that ran no accepted work, "
                     f"{describe_views(idle_views)}; of the other {len(working)}, {describe_views(working)}"
                     f"{describe_gossip(before, (at, views))}")  # fmt: skip
        before = (at, views)
    return "\n".join(lines)


def describe_gossip(before: Look | None, now: Look) -> str:
    """Gossip messages each node received per second since the last look (each message counted once)."""
    if before is None or now[0] <= before[0]:
        return ""
    rates = sorted((b.gossip - a.gossip) / (now[0] - before[0])
                   for a, b in zip(before[1], now[1], strict=True) if a is not None and b is not None)  # fmt: skip
    if not rates:
        return ""
    return (f"; gossip received per node since the last look: {statistics.median(rates):.1f} / {rates[-1]:.1f} "
            "messages/s (median / max)")


def describe_views(views: Sequence[OwnerView | None]) -> str:
    seen = [v for v in views if v is not None]
    return (f"{sum(v.listed for v in seen)} list the owner alive, {sum(v.connected for v in seen)} connected to it, "
            f"{sum(v.surplus > 0 for v in seen)} see it offer work, {sum(v.ran > 0 for v in seen)} ran replicas, "
            f"{sum(v.renewals_failed > 0 for v in seen)} had a lease renewal go unanswered "
            f"({sum(v.renewals_failed for v in seen)} in all); steal requests {describe_steals(seen)}; "
            f"{len(views) - len(seen)} did not answer")  # fmt: skip


def describe_steals(views: Sequence[OwnerView]) -> str:
    asked = sorted(v.steals["asked"] for v in views)
    total: Counter[str] = sum((v.steals for v in views), Counter())
    spread = f"{asked[0]} / {statistics.median(asked):g} / {asked[-1]} per node (min / median / max)" if asked else "-"
    why: Counter[str] = sum((v.failures for v in views), Counter())
    reasons = "; ".join(f"{n}x `{text}`" for text, n in why.most_common(3))
    return (f"{spread}, of them {total['failed']} failed{f' ({reasons})' if reasons else ''}, "
            f"{total['refused']} refused; {total['granted']} replicas granted in all")


def unfinished_job(owner: Node, proc: NsProcess, subtasks: int, wall: float) -> JobResult:
    """Ask the owner how far the job got, then stop following it (Ctrl-C: the job is cancelled across the mesh)."""
    jobs = api_get(owner, "/v1/jobs")
    listed = jobs.get("jobs") if isinstance(jobs, dict) else None
    status: dict[str, Any] = listed[-1] if isinstance(listed, list) and listed else {}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass  # the LAN teardown kills it
    verified = status.get("verified")
    note = f"not finished after {wall:.0f} s: owner's status {json.dumps(status)[:300]}"
    return JobResult(subtasks, wall, False, None, verified, Counter(), [], note)


def read_records(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def executor_names(record: dict[str, Any], nodes: Sequence[Node]) -> list[str]:
    names = {n.api.peer_id: n.name for n in nodes if n.api}
    return [names.get(pid, pid) for pid in record.get("executors", [])]


def stop_nodes(nodes: Sequence[Node]) -> str:
    """SIGTERM to every node at once; how long they took, and any that did not exit cleanly."""
    began = time.monotonic()
    for node in nodes:
        node.proc.send_signal(signal.SIGTERM)
    problems = []
    for node in nodes:
        try:
            code = node.proc.wait(max(0.0, began + STOP_GRACE - time.monotonic()))
        except subprocess.TimeoutExpired:
            problems.append(f"{node.name} still running after {STOP_GRACE:g} s (killed)")
            continue
        if code != 0:
            problems.append(f"{node.name} exit {code}")
    text = f"stopped (SIGTERM) in {time.monotonic() - began:.1f} s"
    return text + (f"; not clean: {', '.join(problems)}" if problems else ", every node exit 0")


LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d  (warning|error|critical): (.*)$")


def log_findings(nodes: Sequence[Node], top: int = 6) -> list[str]:
    """Warnings and errors in the nodes' logs: the most common, each with how many nodes logged it."""
    per_node: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for node in nodes:
        seen: Counter[str] = Counter()
        for line in node.proc.stderr_path.read_text(errors="replace").splitlines():
            m = LOG_LINE.match(line)
            text = f"{m.group(1)}: {m.group(2)}" if m else ("Traceback" if line.startswith("Traceback") else "")
            if text:
                seen[re.sub(r"\d+(\.\d+)?", "#", re.sub(r"12D3KooW\w+|Qm\w{44}", "<peer>", text))[:160]] += 1
        per_node.update(seen.keys())
        total.update(seen)
    if not total:
        return ["node logs: no warnings or errors"]
    lines = [f"node logs: {sum(total.values())} warning/error lines; most common:"]
    lines += [f"  - {per_node[msg]} node(s), {total[msg]}x: `{msg}`" for msg, _ in total.most_common(top)]
    return lines


def measure(lan: Lan, nodes: list[Node], start: float, tmp: Path, args: argparse.Namespace, result: LanResult) -> None:
    n = len(nodes)
    if not wait_until_up(nodes, start, args.deadline, result):
        return
    say(f"  N={n}: every API up after {result.up_s:.1f} s")
    with ThreadPoolExecutor(min(n, SAMPLER_THREADS)) as pool:
        history = wait_for_full_tables(nodes, start, args.deadline, pool, result)
        if result.near_full is not None:
            at, cpu = result.near_full
            cores = len(os.sched_getaffinity(0))
            result.notes.append(f"{NEAR_FULL:.0%} of the table entries alive {at:.0f} s after the first start; the nodes "
                                f"had used {cpu:.0f} CPU-s by then ({cpu / n:.1f} s each, start-up included; "
                                f"{cpu / cores:.0f} s of this machine's {cores} cores)")  # fmt: skip
        if result.full_s is None:
            say(f"  N={n}: no full tables after {args.deadline:g} s: {result.tables}")
            polled = cost_of_wait(history, args.idle)
            if polled is not None:
                result.notes.append(f"while the tables were polled, over the last {polled.seconds:.0f} s of the wait: CPU "
                                    f"per node {statistics.median(polled.cpu):.0f} % median, {max(polled.cpu):.0f} % max")  # fmt: skip
        say(f"  N={n}: settle {args.settle:g} s, then an idle window of {args.idle:g} s")
        time.sleep(args.settle)
        before = snapshot(nodes)
        time.sleep(args.idle)  # nobody asks the nodes anything, whether or not their tables are full
        result.cost = cost_between(before, snapshot(nodes))
        tables = list(pool.map(peer_table, nodes))
        counts = alive_counts(nodes, tables)
        links = [sum(1 for p in t if p.get("connected")) for t in tables if t is not None]
        if links:
            result.notes.append(f"connections per node after the idle window: median {statistics.median(links):g}, "
                                f"min {min(links)}, max {max(links)} (of {n - 1} peers)")  # fmt: skip
        if result.full_s is not None and any(c != n - 1 for c in counts):
            result.notes.append(f"tables no longer full after the idle window: {describe_tables(counts, n)}")
        elif result.full_s is None:
            result.notes.append(f"after the idle window: {describe_tables(counts, n)}")
    if not args.no_job:
        say(f"  N={n}: submitting {args.subtasks} subtasks on n1")
        result.job = run_job(lan, nodes, tmp, args.subtasks, args.job_deadline)
        say(f"  N={n}: job {'done' if result.job.finished else 'not finished'} after {result.job.wall_s:.0f} s")
    if not args.no_join:
        time.sleep(args.settle)
        say(f"  N={n}: one more node joins")
        result.join = measure_join(lan, nodes, tmp, args)


def run_lan(n: int, args: argparse.Namespace, result: LanResult) -> None:
    """One fresh LAN of ``n`` nodes, measured into ``result`` as it goes (an interruption keeps what was measured)."""
    with tempfile.TemporaryDirectory(prefix="meshnode-lan-") as tmp, simulated_lan(n + (not args.no_join)) as lan:
        start = time.monotonic()
        nodes = start_nodes(lan, Path(tmp), args.node_arg, args.bootstrap, count=n)
        try:
            measure(lan, nodes, start, Path(tmp), args, result)
        finally:
            result.notes.append(stop_nodes(nodes))
            result.notes += log_findings(nodes)
            if args.keep_logs:
                shutil.copytree(lan.log_dir, Path(args.keep_logs) / f"n{n}", dirs_exist_ok=True)
        # leaving the blocks: the teardown kills whatever is left, deletes the namespaces, then the data dirs


# --- the report --------------------------------------------------------------------------------------


def med_max(values: Sequence[float], spec: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):{spec}} / {max(values):{spec}}"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def mesh_row(r: LanResult) -> str:
    if r.full_s is not None:
        full = f"{r.full_s - (r.up_s or 0):.1f} / {r.full_s:.1f}"
    else:
        full = f"never: {r.tables.split(';')[0]}" if r.tables else "-"
    c = r.cost
    mark = "*" if c and c.note else ""
    cells = [str(r.n), secs(r.up_s), full]
    if c is None:
        cells += ["-"] * 7
    else:
        cells += [med_max(c.cpu, ".0f") + mark, f"{sum(c.cpu):.0f}{mark}", med_max(c.rss, ".0f"),
                  med_max(c.bytes_s, ",.0f") + mark,
                  med_max(c.packets_s, ".0f") + mark + f" ({statistics.median(c.udp_s):.0f} mDNS)",
                  f"{c.machine_busy:.0f}{mark}", f"{c.load1:.1f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def job_row(r: LanResult) -> str:
    j = r.job
    if j is None:
        return f"| {r.n} | - | - | no job run | - | - | - |"
    verified = "?" if j.verified is None else f"{j.verified}/{j.subtasks}"
    wall = f"{j.wall_s:.0f}" + ("" if j.finished else " (unfinished)")
    per = sorted(j.runs.values())
    spread = f"{per[0]} / {statistics.median(per):g} / {per[-1]}" if per else "-"
    idle = ", ".join(j.idle_nodes) if j.idle_nodes else ("none" if j.finished else "?")
    ran = f"{len(j.runs)}/{r.n}" if j.finished else "?"
    return f"| {r.n} | {j.subtasks} | {wall} | {verified} | {ran} | {spread} | {idle} |"


def join_row(r: LanResult) -> str:
    j = r.join
    if j is None:
        return f"| {r.n} | - | - | - | - |"
    return f"| {r.n} | {secs(j.up_s)} | {secs(j.own_s)} | {secs(j.listed_s)} | {secs(j.full_s)} |"


def git(*argv: str) -> str:
    result = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "?"


def header(args: argparse.Namespace) -> list[str]:
    from importlib.metadata import version

    diff = git("diff", "HEAD", "--", "meshnode")
    fingerprint = sha256(diff.encode()).hexdigest()[:12]
    dirty = f" + uncommitted changes under meshnode/ (diff sha256 {fingerprint})" if diff else ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    extra = " ".join(args.node_arg) or "none"
    return [
        f"meshnode {version('meshnode')}, commit {git('rev-parse', '--short', 'HEAD')}{dirty}; "
        f"libp2p {version('libp2p')}",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, CPython {platform.python_version()}, "
        f"Linux {platform.release()}",
        f"Settings: settle {args.settle:g} s, idle window {args.idle:g} s, table deadline {args.deadline:g} s, "
        f"extra node flags: {extra}; discovery: {'mDNS and --bootstrap to n1' if args.bootstrap else 'mDNS only'}",
    ]


def report(args: argparse.Namespace, results: Sequence[LanResult], interrupted: bool) -> str:
    out = ["## meshnode on a LAN of N nodes (network namespaces on one bridge, mDNS)", "", *header(args), ""]
    if interrupted:
        out += ["**Interrupted: the figures below are what was measured until then.**", ""]
    out += [
        "| N | up after s | full tables after s (from last up / from first start) | CPU % of a core per node, "
        "median / max | CPU % all nodes | RSS MiB median / max | bytes/s per node median / max "
        "| packets/s per node median / max (median of them mDNS, UDP) | machine CPU busy % | load1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *map(mesh_row, results),
    ]
    out += ["", "CPU, traffic and machine CPU busy are over the idle window; load1 is the 1-minute load average "
            "at its end (it still carries some of the start-up)."]
    waits = [f"N={r.n}: {r.cost.note}" for r in results if r.cost and r.cost.note]
    if waits:
        out += ["", "\\* " + "; ".join(waits) + " (the tables were being polled every second meanwhile)."]
    if not args.no_job:
        out += [
            "",
            f"Job: monte_carlo_pi ({SAMPLES:,} samples per subtask), {REPLICAS} replicas, submitted on n1:",
            "",
            "| N | subtasks | wall s | verified | nodes that ran work | accepted runs per node min / median / max "
            "| nodes that ran nothing |",
            "|---|---|---|---|---|---|---|",
            *map(job_row, results),
        ]
    if not args.no_join:
        out += [
            "",
            f"A node joins: after the {'job' if not args.no_job else 'idle window'} and {args.settle:g} s more, one more "
            "node starts on a host of its own; times from its API up (tables read every "
            f"{JOIN_POLL:g} s, so each is at most that late):",
            "",
            "| N before | its API up after s (from its start) | its table full after s | every other node lists it "
            "after s | every table full after s |",
            "|---|---|---|---|---|",
            *map(join_row, results),
        ]
    out += ["", "Notes:"]
    for r in results:
        notes = [*r.notes, *([r.tables] if r.tables else []), *([f"join: {r.join.note}"] if r.join and r.join.note else []), *([r.job.note] if r.job and r.job.note else []),
                 *(r.job.looks.splitlines() if r.job and r.job.looks else [])]
        if not notes:
            continue
        out += [f"- N={r.n}: " + notes[0], *(f"  {x}" if x.startswith("  ") else f"  - {x}" for x in notes[1:])]
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 50],
                   help="LAN sizes, comma-separated (default 10,20,50)")  # fmt: skip
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds of full tables before the idle window (default 10)")  # fmt: skip
    p.add_argument("--idle", type=float, default=60.0, help="idle window, seconds (default 60)")
    p.add_argument("--deadline", type=float, default=300.0,
                   help="seconds from the first start for full tables, else give up on that N (default 300)")
    p.add_argument("--subtasks", type=int, default=2000, help="subtasks of the job (default 2000)")
    p.add_argument("--job-deadline", type=float, default=1200.0,
                   help="seconds for the job to finish (default 1200)")  # fmt: skip
    p.add_argument("--no-job", action="store_true", help="measure the LAN only")
    p.add_argument("--no-join", action="store_true", help="do not measure one more node joining at the end")
    p.add_argument("--node-arg", action="append", default=[], metavar="FLAG",
                   help="an extra flag for every node, repeatable; write --node-arg=--flag=value")  # fmt: skip
    p.add_argument("--bootstrap", action="store_true",
                   help="give every node the first one's address too (mDNS stays on): membership without relying on mDNS")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the nodes' logs here (DIR/nN/) before each teardown")
    args = p.parse_args(argv)
    if min(args.sizes) < 2 or max(args.sizes) > 253:
        p.error("every size must be between 2 and 253 (one /24 subnet per LAN, a host kept for the joining node)")
    return args


def run_all(args: argparse.Namespace, results: list[LanResult], on_each: Callable[[LanResult], None]) -> None:
    for n in args.sizes:
        say(f"N={n}: starting {n} nodes (load1 {os.getloadavg()[0]:.1f})")
        result = LanResult(n)
        results.append(result)
        run_lan(n, args, result)
        on_each(result)


def main() -> int:
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the context managers remove their namespaces and processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[LanResult] = []
    code = 0
    try:
        run_all(args, results, lambda r: say(f"N={r.n}: done"))
    except NetnsUnavailable as exc:
        say(f"cannot build a LAN here: {exc}")
        return 2
    # Everything is torn down by now: the context managers saw to it.
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:  # SIGTERM
        code = exc.code if isinstance(exc.code, int) else 1
    print(report(args, results, interrupted=code != 0), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
