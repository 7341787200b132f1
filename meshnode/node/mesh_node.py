"""``MeshNode``: one trio nursery that wires the host, presence, the peer table and the local API.

Usage in a trio program::

    async with meshnode.open_node(NodeConfig(data_dir=...)) as node:
        print(node.peer_id, node.dial_addrs)
        ...

The node is fully started when the block is entered. Leaving the block
normally says goodbye to the peers and stops everything; a cancellation (or an
exception) stops everything without a goodbye, like a crash, and the peers time
the node out.

The node is an edge in the sense of docs/design.md: it owns the clocks and the
I/O, feeds events to ``PeerTable`` and carries out the instructions it returns.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, assert_never

import trio

from .._version import __version__
from ..config import DEFAULT_LIMITS, NodeConfig
from ..core.adaptive import TrustBook
from ..core import wire
from ..core.job import PeerLeft as JobPeerLeft
from ..core.job import ReplicaRef
from ..core.job import Tick as JobTick
from ..core.manifest import Replication, TaskLimits
from ..core.manifest import JobOptions
from ..core.peer_id import PeerId
from ..core.peers import (
    DIAL_GRACE, REDIAL_FIRST, REDIAL_JITTER, REDIAL_MAX, ConnectionChanged, DialFailed, DialPeer, DropConnection, GoodbyeHeard,
    Instruction, PeerGone, PeerJoined, PeerReachable, PeerStale, PeerTable, PeerUnreachable, PresenceHeard,
    RttMeasured, Tick, Wanted,
)  # fmt: skip
from ..core.presence import MAX_HINTS, Goodbye, PeerHints, Presence, heartbeat_interval, next_seq
from ..core.reputation import Reputation
from ..core.steal import POOR_SCORE, PeerView, better_idle, grant_for, views_of
from ..errors import JournalError, MeshError, PeerUnavailableError, SandboxError, WireError
from ..net.addresses import parse_bootstrap, split_tcp
from ..net.blob_protocol import serve_blobs
from ..net.gossip import PresenceGossip
from ..net.hello import send_hello, serve_hello
from ..net.host import MeshHost, from_libp2p_id, open_host
from ..net.job_protocol import serve_jobs
from ..net.streams import read_frame, write_frame
from ..net.swarm_key import load_swarm_key
from ..core.outcome import TaskError
from ..core.python_rows import check_row, default_rows_per_subtask, encode_row, encode_script, is_script
from ..sandbox.python_runtime import RUNTIME_ID, PythonRuntime, ScriptCheck
from ..sandbox.runtime import ENGINE_ID, Sandbox
from ..storage.blobs import BlobStore
from ..storage.identity import Identity, load_or_create_identity
from ..storage.journal import Store, VerifiedOutput
from ..storage.lock import DataDirLock
from .crediting import Crediting
from .executing import Executor
from .job_service import MeshJobService
from .job_summary import job_summary, journal_states, row_layout
from .memory import TRIM_EVERY, trim_free_memory
from .metrics import NodeMetrics, NodeReadings
from .owning import ROWS_ARE_FOR_SCRIPTS, JobManager, RunningJob
from .plain_errors import raise_mesh_error_plainly
from .stealing import Workers
from .sysinfo import cpu_model, gpus, machine_load

__all__ = ["MeshNode", "open_node"]

log = logging.getLogger("meshnode")

GOODBYE_PROTOCOL = "/meshnode/goodbye/1.0.0"
STORE_FILE_NAME = "node.db"
RTT_LOOK_EVERY = 1.0  # seconds between two looks for peers whose round-trip time is due (PeerTable.rtt_due)
CHANGE_GAP = 0.5  # seconds: presence changes closer together than this go out in one message
# A thief told "nothing left for you" waits for a newer presence. Work that comes back after that (a lease
# lapsed, a verdict asked for more) is news for it, told by the next tick at most this often (seconds).
# Measured in the simulator: with no news, a job's last subtasks waited for the heartbeat, up to 600 s; with
# news only of growth a tick saw (every 5 s at most), work back between two ticks still waited for it.
WAITING_NEWS_GAP = 1.0
# Peer reputations and the trust book are saved this often (seconds) when verdicts changed them, so that
# a crash forgets little of who was caught lying (they are saved at once when someone is).
STANDING_EVERY = 60.0
MDNS_SWEEP_FAST, MDNS_SWEEP = 2.0, 30.0  # seconds between two reads of the mDNS cache: the first minute, then
MDNS_ANNOUNCE = 10.0  # seconds between two mDNS announcements of a node that knows no peer
HELLO_TRIES = 3  # a hello that fails (a busy peer, a connection opened twice) is sent again, this many times in all
# Routine dials under way at once. On a LAN a dial takes milliseconds, so a few at a time reach 49 peers
# in well under a second; 50 nodes starting on 2 cores with 16 each had hundreds of handshakes in flight,
# none finishing before its timeout, and no table listed anyone for a minute after every node was up.
MAX_CONCURRENT_DIALS = 4
STRANGER_SPREAD = 2.0  # seconds: an mDNS find is dialled within this, at random
JOIN_ANNOUNCE_GAPS = (10.0, 20.0)  # seconds between presences published again as the node joins (``_announce_joined``)
JOURNAL_RETRY = 2.0  # seconds between attempts to write to a journal that refused a write


def short(peer: PeerId) -> str:
    text = str(peer)
    return f"{text[:8]}…{text[-6:]}"


class MeshNode:
    """A running mesh node. Get one from ``open_node``; read its state from any trio task."""

    def __init__(self, config: NodeConfig) -> None:
        for addr in config.listen:
            split_tcp(addr)  # fail fast, before any I/O, on a malformed address
        for addr in config.bootstrap:
            parse_bootstrap(addr)
        self.config = config
        self.identity: Identity = load_or_create_identity(config.data_dir)
        self.peer_id: PeerId = self.identity.peer_id
        self.table = PeerTable(self.peer_id)
        self.dropped: Counter[str] = Counter()  # invalid messages, by reason
        self.started_at = time.monotonic()
        self.api_url: str | None = None
        self._host: MeshHost | None = None
        self._gossip: PresenceGossip | None = None
        self._seq = 0
        self._idle = config.slots
        self._presence_changed = trio.Event()
        self._offered = False  # the last presence published offered work (surplus)
        self._new_work = False  # a job was submitted, or paused jobs resumed, since the last presence
        self._join_announcements = 0  # presences published again as the node joined (``_announce_joined``)
        self._next_join_announcement = 0.0  # monotonic seconds: not before then
        self._waiting_below: int | None = None  # thieves told nothing is left wait for a surplus above this
        self._waiting_told = 0.0  # monotonic time they were last told of work (WAITING_NEWS_GAP)
        self._python_broken = False  # the compiled Python runtime failed to load: not tried again
        self._dial_limiter = trio.CapacityLimiter(MAX_CONCURRENT_DIALS)
        self._dialing: set[PeerId] = set()  # dials under way
        self._queued_dials: set[PeerId] = set()  # routine dials waiting for the limiter
        self._nursery: trio.Nursery | None = None
        self._presence_scope = trio.CancelScope()
        self.reputation = Reputation()  # loaded from the journal when the node starts
        self.jobs: JobManager  # set when the node starts
        self._advertised_surplus = 0
        self._workers: Workers | None = None  # set when the node starts
        self.metrics = NodeMetrics(self._readings)

    # --- public state --------------------------------------------------------------------

    @property
    def host(self) -> MeshHost:
        if self._host is None:
            raise RuntimeError("the node is not running")
        return self._host

    @property
    def dial_addrs(self) -> list[str]:
        return self.host.dial_addrs()

    def info(self) -> dict[str, Any]:
        """The node's own state, as the local API serves it."""
        load = machine_load()
        return {
            "peer_id": str(self.peer_id),
            "version": __version__,
            "engine": ENGINE_ID,
            "runtimes": list(self.jobs.executor.runtimes()) if hasattr(self, "jobs") else ["wasm"],
            "addrs": self.dial_addrs if self._host else [],
            "api": self.api_url,
            "data_dir": str(self.config.data_dir),
            "slots": self.config.slots,
            "idle": self._idle,
            "load1": load.load1,
            "mem_free": load.mem_free,
            "mem_total": load.mem_total,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "peers": {state: sum(1 for r in self.table if r.state == state) for state in ("alive", "stale", "gone")},
            "connections": self.table.connections(),
            "gossip": self._gossip.links() if self._gossip is not None else {},
            "dropped_messages": dict(self._dropped()),
            "refused_work": dict(self._workers.refused) if self._workers is not None else {},
            "lease_renewals_failed": self._workers.renewals_failed if self._workers is not None else 0,
            "steals": dict(self._workers.steals) if self._workers is not None else {},
            "steal_failures": dict(self._workers.steal_failures.most_common(5)) if self._workers is not None else {},
            # replicas of other owners' jobs this node holds (queued, running, or waiting for an answer)
            "stolen_held": sum(map(len, self._workers.thief.held().values())) if self._workers is not None else 0,
            "journal": self._journal_state(),
            "jobs_run": self._jobs_run(),
            "pid": os.getpid(),
        }

    def _dropped(self) -> Counter[str]:
        """Messages dropped as invalid, by reason: the node's receivers' and the peer table's."""
        dropped = Counter(self.dropped)
        dropped.update(self.table.dropped)
        return dropped

    def _readings(self) -> NodeReadings:
        """What the metrics read at each scrape (``node/metrics.py``)."""
        return NodeReadings(
            peers=Counter(r.state for r in self.table), dropped=self._dropped(),
            traffic=self._host.traffic if self._host is not None else {},
            gossip_received=self._gossip.received if self._gossip is not None else 0, slots=self.config.slots,
            idle=self._idle, identity={"peer_id": str(self.peer_id), "version": __version__, "engine": ENGINE_ID},
        )  # fmt: skip

    def _jobs_run(self) -> dict[str, Any]:
        """What this node ran of each recent job (its own and other owners'): chunks, replicas, when."""
        manager = getattr(self, "jobs", None)
        if manager is None:
            return {}
        return {
            job_id.hex(): {"chunks": a.chunks, "replicas": a.replicas, "running": a.running,
                           "last_started": a.last_started, "last_ended": a.last_ended}
            for job_id, a in manager.executor.activity.items()
        }  # fmt: skip

    def _journal_state(self) -> dict[str, Any]:
        """Whether the journal takes writes, and which jobs wait for it."""
        manager = getattr(self, "jobs", None)
        if manager is None:
            return {"ok": True, "problem": "", "paused_jobs": [], "damaged_jobs": {}}
        paused = [job for job in manager.jobs.values() if job.paused]
        problem = manager.executor.journal_problem or (paused[0].paused if paused else "")
        return {
            "ok": not problem, "problem": problem, "paused_jobs": [job.job_id.hex() for job in paused],
            "damaged_jobs": {job_id.hex(): why for job_id, why in manager.damaged.items()},
        }  # fmt: skip

    def peers(self) -> list[dict[str, Any]]:
        """The peer table, as the local API serves it."""
        now = time.monotonic()
        out = []
        for r in sorted(self.table, key=lambda r: (r.state != "alive", str(r.peer))):
            p = r.presence
            out.append({
                "peer_id": str(r.peer), "state": r.state, "addrs": list(p.addrs), "slots": p.slots,
                "idle": p.idle, "surplus": p.surplus, "load1": p.load1, "mem_free": p.mem_free,
                "mem_total": p.mem_total, "cpu": p.cpu, "gpus": [{"name": g.name, "memory": g.memory} for g in p.gpus],
                "version": p.version, "engine": p.engine, "runtimes": list(p.runtimes),
                "rtt_ms": None if r.rtt_ms is None else round(r.rtt_ms, 3),
                "last_seen_s": round(now - r.last_seen, 3), "connected": r.connected,
                "gossip_heard_s": None if r.gossip_heard is None else round(now - r.gossip_heard, 3),
                "reputation": self._reputation_of(r.peer),
            })  # fmt: skip
        return out

    def _reputation_of(self, peer: PeerId) -> dict[str, Any]:
        record = self.reputation[peer]
        return {
            "agreements": record.agreements, "disagreements": record.disagreements, "failures": record.failures,
            "score": round(record.score, 3), "barred": record.barred_from_quorum,
        }  # fmt: skip

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``task_status.started`` fires once the node is fully up."""
        psk = load_swarm_key(self.config.swarm_key) if self.config.swarm_key else None
        with DataDirLock(self.config.data_dir), _open_journal(self.config.data_dir) as store:
            self.reputation = _load_reputation(store)
            trust = _load_trust(store)
            blobs = BlobStore(self.config.data_dir / "blobs")
            try:
                with Sandbox(slots=self.config.slots, cache_dir=self.config.data_dir / "modules", processes=True) as sandbox:
                    executor = Executor(self.identity, sandbox, blobs, store, self.config.trust, self.metrics)
                    self.jobs = JobManager(self.identity, blobs, store, executor, self.reputation, trust)
                    for job in self.jobs.resume():
                        decided, total = _decided(job)
                        log.info("resumed job    %s  (%d of %d subtasks decided)", job.job_id.hex(), decided, total,
                                 extra={"event": "job_resumed", "job": job.job_id.hex(), "decided": decided,
                                        "subtasks": total})  # fmt: skip
                    try:
                        async with open_host(self.identity, self.config.listen, psk=psk, mdns=self.config.mdns) as host:
                            await self._run_on(host, task_status)
                    finally:
                        self.jobs.flush()
            finally:
                JobManager.save_standing_of(store, self.reputation, trust)

    async def _run_on(self, host: MeshHost, task_status: Any) -> None:
        self._host = host
        self._gossip = PresenceGossip(host, self.identity, self.dropped)
        await self._gossip.start()
        host.set_stream_handler(GOODBYE_PROTOCOL, self._receive_goodbye)
        serve_hello(host, functools.partial(self._presence_heard, by_gossip=False), self.table.seq_of, self.dropped)
        serve_blobs(host, self.jobs.blobs, dropped=self.dropped)
        self._workers = Workers(host, self.jobs, self.config.slots, self._victims, self.set_idle, self.dropped)
        workers = self._workers
        self.credit = Crediting(self.jobs.store, self.identity)
        self.credit.ask, self.credit.reachable = workers.client.credit, host.is_connected
        workers.on_accepted = self.credit.owed
        workers.want = lambda peer: self._apply(self.table.handle(Wanted(peer, time.monotonic())))
        service = MeshJobService(
            self.jobs, workers, self._grant_policy, on_release=workers.wake, crediting=self.credit,
            on_nothing_left=self._told_nothing_left,
        )  # fmt: skip
        serve_jobs(host, service, dropped=self.dropped)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.jobs.revocations = functools.partial(self._send_revocation, nursery)
                self.jobs.work_added = self._work_added
                nursery.start_soon(self._receive_presence)
                nursery.start_soon(self._publish_presence)
                nursery.start_soon(self._watch_connections)
                nursery.start_soon(self._tick)
                nursery.start_soon(self._measure_rtts)
                nursery.start_soon(self._workers.run)
                nursery.start_soon(self._watch_journal)
                nursery.start_soon(self._trim_memory)
                nursery.start_soon(self.credit.run)
                for addr in self.config.bootstrap:
                    nursery.start_soon(self._keep_bootstrap, addr)
                if self.config.mdns:
                    nursery.start_soon(self._dial_mdns_discoveries)
                    nursery.start_soon(self._sweep_mdns_cache)
                    nursery.start_soon(self._announce_mdns)
                if self.config.api is not None:
                    await nursery.start(self._serve_api)
                self._announce_start()
                task_status.started(self)
        finally:
            self._host = None
            self._workers = None

    def _victims(self) -> list[PeerView]:
        return views_of(self.table, self.reputation)

    async def say_goodbye(self) -> None:
        """Tell the peers we are leaving, so they drop us at once."""
        if self._gossip is None:
            return
        self._presence_scope.cancel()  # no presence may follow the goodbye
        self._seq = next_seq(self._seq, _unix_ms())
        goodbye = Goodbye(peer_id=self.peer_id, seq=self._seq)
        envelope = wire.sign(goodbye, self.identity.signing_key)
        # Gossip reaches everyone in time, but a peer outside our gossip mesh hears
        # it only at the next heartbeat or two: every directly connected peer gets
        # it on a stream of its own as well.
        with trio.move_on_after(1.0):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._gossip.publish, goodbye)
                for peer in self.host.connected_peers():
                    nursery.start_soon(self._send_goodbye, peer, envelope)
            # frames are queued when the writes return: let the muxer flush them
            await trio.sleep(0.05)

    async def _send_goodbye(self, peer: PeerId, envelope: bytes) -> None:
        try:
            stream = await self.host.open_stream(peer, GOODBYE_PROTOCOL, timeout=0.5)
            await write_frame(stream, envelope)
            await stream.close()
        except Exception as exc:  # the peer may be going too; gossip still carries it
            log.debug("goodbye to %s: %s", peer, exc)

    async def _receive_goodbye(self, remote: PeerId, stream: Any) -> None:
        data = await read_frame(stream, 1024)
        try:
            goodbye = wire.open_signed(data, remote, Goodbye)
            if goodbye.peer_id != remote:
                raise WireError(f"goodbye from {remote} speaks for {goodbye.peer_id}")
        except WireError as exc:
            self.dropped["bad_goodbye"] += 1
            log.debug("dropped a goodbye: %s", exc)
            return
        self._apply(self.table.handle(GoodbyeHeard(goodbye, time.monotonic())))

    def set_idle(self, idle: int) -> None:
        """Report a new number of idle slots (peers hear of it with the next presence).

        Slots go busy and idle between chunks many times a second: publishing each
        change would cost more gossip than the work it describes.
        """
        self._idle = max(0, min(idle, self.config.slots))

    # --- presence --------------------------------------------------------------------------

    def _runtimes(self) -> tuple[str, ...]:
        """What this node can run; a Python runtime prepared since (``meshnode python-setup``) is taken up here."""
        sandbox = self.jobs.executor.sandbox
        if sandbox.python is None and not self._python_broken and PythonRuntime.ready():
            try:
                sandbox.prepare_python()  # compiled already: loading it takes milliseconds
                log.info("Python tasks: the runtime is ready (%s)", RUNTIME_ID)
            except SandboxError as exc:
                self._python_broken = True
                log.warning("Python tasks: the runtime cannot load: %s", exc)
        return self.jobs.executor.runtimes()

    def _presence(self) -> Presence:
        load = machine_load()
        self._seq = next_seq(self._seq, _unix_ms())
        return Presence(
            peer_id=self.peer_id,
            seq=self._seq,
            interval_ms=round(self._heartbeat() * 1000),
            addrs=tuple(self.host.advertised_addrs[:16]),
            version=__version__,
            engine=ENGINE_ID,
            runtimes=self._runtimes(),
            slots=self.config.slots,
            idle=self._idle,
            surplus=min(self.surplus(), 2**31),
            load1=load.load1,
            mem_free=load.mem_free,
            mem_total=load.mem_total,
            cpu=cpu_model(),
            gpus=gpus(),
        )

    def _heartbeat(self) -> float:
        return heartbeat_interval(self.config.presence_interval, len(self.table.alive()))

    async def _publish_presence(self) -> None:
        """Publish when something peers act on changes (``_presence_changed``), else at each slow heartbeat."""
        assert self._gossip is not None
        with self._presence_scope:
            while True:
                presence = self._presence()
                self._offered = presence.surplus > 0
                try:
                    await self._gossip.publish(wire.sign(presence, self.identity.signing_key))
                except Exception as exc:  # a broken stream to one peer must not stop presence
                    log.debug("publishing presence failed: %s", exc)
                # A burst of changes goes out as one message; but new work (a job, paused jobs resumed), or
                # work where the last message offered none, is told at once: thieves that found
                # nothing left wait for news of work, and would idle for the gap.
                changed, self._new_work = False, False
                with trio.move_on_after(min(CHANGE_GAP, self.config.presence_interval)):
                    while not self._new_work and (self._offered or not self.surplus()):
                        await self._presence_changed.wait()
                        self._presence_changed, changed = trio.Event(), True
                if changed:
                    continue
                # Within the interval this presence advertised, not the current one: peers time us out by
                # it, and it grows as our table fills (a node that joined with 5 peers and then listed 49
                # waited 294 s where its last presence said 30, and peers heard only by gossip went stale).
                # Jittered, so that nodes started together spread out.
                with trio.move_on_after(presence.interval_ms / 1000 * random.uniform(5 / 6, 7 / 6)):
                    await self._presence_changed.wait()
                self._presence_changed = trio.Event()

    def _signed_presence(self) -> bytes:
        return wire.sign(self._presence(), self.identity.signing_key)

    def _presence_heard(self, msg: Presence, signed: bytes, by_gossip: bool = True) -> None:
        self._apply(self.table.handle(PresenceHeard(msg, time.monotonic(), by_gossip, signed)))
        if self._workers is not None and msg.surplus > 0:
            self._workers.presence_heard(msg.peer_id)

    async def _receive_presence(self) -> None:
        assert self._gossip is not None
        async for msg, signed in self._gossip.messages():
            if isinstance(msg, Presence):
                self._presence_heard(msg, signed)
            else:
                self._apply(self.table.handle(GoodbyeHeard(msg, time.monotonic())))

    # --- hello: presence and hints on each new connection ------------------------------------

    def _hints(self, to: PeerId) -> PeerHints:
        known = self.table.hints(to)
        random.shuffle(known)  # in a mesh over MAX_HINTS, different newcomers hear of different peers
        return PeerHints(tuple(known[:MAX_HINTS]))

    async def _send_hello(self, peer: PeerId) -> None:
        for attempt in range(HELLO_TRIES):
            if self._presence_scope.cancel_called or not self.host.is_connected(peer):
                return  # leaving (a goodbye went out already), or the peer is gone
            try:
                await send_hello(self.host, peer, self._signed_presence(), self._hints(peer))
                return
            except Exception as exc:  # a busy peer, or a connection closing; gossip still carries our presence
                log.debug("hello to %s (try %d): %s", peer, attempt + 1, exc)
            if attempt + 1 < HELLO_TRIES:
                await trio.sleep(2.0**attempt)

    async def _tick(self) -> None:
        saved = time.monotonic()
        while True:
            busy = any(not job.done for job in self.jobs.jobs.values())
            await trio.sleep(min(0.25 if busy else 1.0, self.config.presence_interval / 4))
            now = time.monotonic()
            self._apply(self.table.handle(Tick(now)))
            self._announce_joined(now)
            for job in list(self.jobs.jobs.values()):
                await self._drive(job, JobTick(now))
            surplus = self.surplus()
            if surplus > self._advertised_surplus and self._workers is not None:
                self._workers.wake()  # replicas came back (a lease lapsed, a verdict asked for more)
            if self._waiting_below is not None:
                if surplus > self._waiting_below and now - self._waiting_told >= WAITING_NEWS_GAP:
                    self._new_work, self._waiting_below, self._waiting_told = True, None, now
                    self._presence_changed.set()  # work came back since a thief was told there was none
                else:
                    self._waiting_below = min(self._waiting_below, surplus)
            if (surplus > 0) != (self._advertised_surplus > 0):
                self._presence_changed.set()  # thieves must hear at once that there is work, or none
            self._advertised_surplus = surplus
            if now - saved >= STANDING_EVERY:
                saved = now
                await trio.to_thread.run_sync(self.jobs.save_standing)

    def _told_nothing_left(self) -> None:
        """A steal answer told a thief nothing is left for it: the next tick that sees more work tells it."""
        surplus = self.surplus()
        self._waiting_below = surplus if self._waiting_below is None else min(self._waiting_below, surplus)

    async def _watch_connections(self) -> None:
        async for event in self.host.events:
            record = self.table.peers.get(event.peer)
            # A hello on every connection that opens, also while an older one is still up: a peer that
            # restarted at once reconnects before its old connection is seen closed, and hears us only so.
            new = event.connected and (record is None or not record.connected or event.opened)
            self._apply(self.table.handle(ConnectionChanged(event.peer, event.connected, time.monotonic())))
            if new and self._nursery is not None:
                self._nursery.start_soon(self._send_hello, event.peer)

    def _announce_joined(self, now: float) -> None:
        """Publish presence again once gossip has a mesh to carry it, then ``JOIN_ANNOUNCE_GAPS`` later: the
        first presence went out before there was one, and only gossip carries a presence past the peers
        we are connected to. Spread out, because the peers' gossip comes up at their own pace (on 50
        nodes starting on 2 cores, pubsub's streams came up to 25 s after the connections)."""
        assert self._gossip is not None
        done = self._join_announcements
        if done > len(JOIN_ANNOUNCE_GAPS) or now < self._next_join_announcement or not self._gossip.mesh_size():
            return
        if done < len(JOIN_ANNOUNCE_GAPS):
            self._next_join_announcement = now + JOIN_ANNOUNCE_GAPS[done]
        self._join_announcements = done + 1
        self._presence_changed.set()

    async def _measure_rtts(self) -> None:
        """Ping the peers the table says are due: a new peer within a second, then every ``rtt_interval`` s."""
        while True:
            for peer in self.table.rtt_due(time.monotonic()):
                rtt: float | None = None
                try:
                    rtt = await self.host.ping(peer)
                except PeerUnavailableError as exc:
                    log.debug("%s", exc)
                self._apply(self.table.handle(RttMeasured(peer, rtt, time.monotonic())))
            await trio.sleep(RTT_LOOK_EVERY)

    # --- work ----------------------------------------------------------------------------------

    def surplus(self) -> int:
        """Replicas of this node's jobs that thieves could take now, and stolen ones it could pass on."""
        own = sum(job.owner.surplus() for job in self.jobs.jobs.values() if not job.owner.finished and not job.paused)
        return own + (self._workers.surplus() if self._workers is not None else 0)

    async def _drive(self, job: RunningJob, event: JobTick | JobPeerLeft) -> None:
        try:
            await self.jobs.drive(job, event)
        except JournalError:
            pass  # the job is paused and said why; what it decided waits for the journal

    def _send_revocation(self, nursery: trio.Nursery, holder: PeerId, job_id: bytes, replicas: tuple[ReplicaRef, ...], reason: str) -> None:
        """Tell a holder to stop replicas of our job, in the background (a lost message costs only its lease)."""

        async def send() -> None:
            if self._workers is None:
                return
            try:
                await self._workers.client.revoke(holder, job_id, replicas, reason)
            except (PeerUnavailableError, WireError) as exc:
                log.debug("revoking %d replicas held by %s: %s", len(replicas), holder, exc)

        nursery.start_soon(send)

    def _work_added(self) -> None:
        """Replicas came back to a job, or were added: idle slots and thieves should hear of them."""
        if self._workers is not None:
            self._workers.wake()
        self._presence_changed.set()

    async def credit_report(self) -> dict[str, Any]:
        """The credit ledger (api.credit_routes.CreditBook)."""
        return await self.credit.credit_report()

    async def _watch_journal(self) -> None:
        """While the journal refuses writes, try again every few seconds; carry on by itself once it takes them."""
        executor = self.jobs.executor
        while True:
            await trio.sleep(JOURNAL_RETRY)
            if any(job.paused for job in self.jobs.jobs.values()) and await self.jobs.retry_journal():
                self._new_work = True
                self._presence_changed.set()  # the resumed jobs' work is on offer again
                if self._workers is not None:
                    self._workers.wake()
            if executor.journal_problem:
                try:
                    await trio.to_thread.run_sync(self.jobs.store.probe)
                except JournalError:
                    continue
                log.info("the journal takes writes again: this node takes work from its peers again",
                         extra={"event": "journal_recovered"})
                executor.journal_problem = ""

    async def _trim_memory(self) -> None:
        """While the node works, give the memory it freed back to the system now and then (see memory.py)."""
        executor = self.jobs.executor
        seen = 0
        while True:
            await trio.sleep(TRIM_EVERY)
            chunks = sum(a.chunks for a in executor.activity.values())
            if chunks != seen or any(not job.done for job in self.jobs.jobs.values()):
                seen = chunks
                await trio.to_thread.run_sync(trim_free_memory)

    # --- the jobs, as the local API sees them (api.job_routes.JobDesk) ----------------------

    def job_ids(self) -> list[bytes]:
        return [saved.job_id for saved in self.jobs.store.jobs()]

    def job_summary(self, job_id: bytes) -> dict[str, Any] | None:
        return job_summary(self.jobs, job_id, len(self.table.alive()))

    async def subtask_states(self, job_id: bytes) -> str | None:
        job = self.jobs.jobs.get(job_id)
        if job is not None:
            return job.owner.state_letters()
        return await trio.to_thread.run_sync(journal_states, self.jobs, job_id)

    def results_page(self, job_id: bytes, after: int, limit: int) -> list[VerifiedOutput]:
        return self.jobs.store.outputs_page(job_id, after, limit)

    def row_layout(self, job_id: bytes) -> tuple[int, int]:
        return row_layout(self.jobs, job_id)

    async def decided(self, job_id: bytes, start: int, limit: int, wait: float) -> tuple[list[int], bool] | None:
        job = self.jobs.jobs.get(job_id)
        if job is None:  # a job of an earlier run of this node: all its outputs are in the journal
            if self.jobs.store.job(job_id) is None:
                return None
            indices = await trio.to_thread.run_sync(self.jobs.store.output_indices, job_id, start, limit)
            return indices, len(indices) < limit
        if start >= len(job.decided) and not job.done:
            changed = job.changed
            with trio.move_on_after(wait):
                await changed.wait()
        indices = list(job.decided[start : start + limit])
        return indices, job.done and start + len(indices) == len(job.decided)

    def outputs_of(self, job_id: bytes, indices: list[int], max_bytes: int) -> list[VerifiedOutput | None]:
        return self.jobs.store.outputs_of(job_id, indices, max_bytes)

    async def recheck_job(self, job_id: bytes) -> int | None:
        try:
            return await self.jobs.recheck(job_id)
        except KeyError:
            return None

    async def cancel_job(self, job_id: bytes) -> bool:
        job = self.jobs.jobs.get(job_id)
        if job is None:
            return self.jobs.store.job(job_id) is not None
        await self.jobs.cancel(job)
        return True

    async def submit(
        self, module: bytes, inputs: Iterable[bytes], options: JobOptions | None = None, *,
        replicas: int | None = None, quorum: int | None = None, max_replicas: int = 5, entry: str = "run",
        fuel: int | None = None, memory: int | None = None, timeout: float | None = None,
        max_output: int | None = None, label: str = "", nan_canonical: bool = False,
        rows_per_subtask: int | None = None, verify: Literal["fixed", "adaptive"] | None = None,
    ) -> RunningJob:  # fmt: skip
        """Own a new job: its replicas go to this node's slots and to any peer that steals them.

        ``inputs`` is any iterable of bytes (one subtask each). The keywords build the
        job's options (limits default to ``DEFAULT_LIMITS``; adaptive replication unless
        ``replicas`` or ``quorum`` is given, as ``meshnode submit``); pass ``options`` instead
        for full control. Then ``async for result in job.results()``, ``await job.wait()``,
        ``await job.cancel()``.

        Raises:
            SandboxError: the module cannot run at all (invalid, a forbidden import, or no
                entry function of that name and type).
            ValueError: no inputs, or a replication policy that can never verify.
            TypeError: an input that is not bytes.
        """
        self.jobs.executor.sandbox.warm()  # its sandbox processes start while the job is taken in
        script, checked = is_script(module), False
        if options is None:
            d = DEFAULT_LIMITS
            limits = TaskLimits(
                fuel=d.fuel if fuel is None else fuel, memory=d.memory if memory is None else memory,
                timeout_ms=d.timeout_ms if timeout is None else max(1, round(timeout * 1000)),
                max_output=d.max_output if max_output is None else max_output,
            )  # fmt: skip
            verify = verify or ("fixed" if replicas is not None or quorum is not None else "adaptive")
            replication = Replication(2 if replicas is None else replicas, 2 if quorum is None else quorum, max_replicas)
            problem = replication.check()
            if not problem and verify == "adaptive" and replication.quorum < 2:
                problem = "adaptive replication needs a quorum of 2 or more, for the subtasks it checks"
            if problem:
                raise ValueError(problem)
            options = JobOptions(limits, replication, entry=entry, nan_canonical=nan_canonical, label=label,
                                 rows_per_subtask=rows_per_subtask or 0, verify=verify)  # fmt: skip
        if script and not options.rows_per_subtask:  # grouped by what the script and its first row cost
            # read in a worker thread: the rows may come from an API request's body (api.frame_stream)
            rows: list[bytes] = await trio.to_thread.run_sync(list, inputs)
            cost = await self._check_script(module, options.limits, rows[0] if rows else None)
            per = default_rows_per_subtask(len(rows), cost.startup_fuel, cost.row_fuel)
            inputs = rows
            options, checked = dataclasses.replace(options, rows_per_subtask=per), True
        if bool(options.rows_per_subtask) != script:
            raise ValueError(ROWS_ARE_FOR_SCRIPTS)
        if script:
            if not checked:
                await self._check_script(module, options.limits, None)
        else:
            # compiling a module and hashing every input take time: not on the node's event loop
            loaded = await trio.to_thread.run_sync(
                functools.partial(self.jobs.executor.sandbox.load, module, nan_canonical=options.nan_canonical)
            )
            entry_problem = loaded.check_entry(options.entry)
            if entry_problem is not None:  # every replica would fail with it: refuse the job instead
                raise SandboxError(entry_problem)
        job = await trio.to_thread.run_sync(self.jobs.create, module, inputs, options, _unix_ms())
        await trio.to_thread.run_sync(trim_free_memory)  # what taking the job in needed, and no longer does
        self.jobs.start(job)
        log.info("job %s  %d subtasks, replicas %d, quorum %d", job.job_id.hex(), job.manifest.subtask_count,
                 options.replication.replicas, options.replication.quorum,
                 extra={"event": "job_submitted", "job": job.job_id.hex(), "subtasks": job.manifest.subtask_count,
                        "replicas": options.replication.replicas, "quorum": options.replication.quorum,
                        "label": options.label})  # fmt: skip
        if self._workers is not None:
            self._workers.wake()
        self._new_work = True
        self._presence_changed.set()
        return job

    async def submit_python(
        self, source: str, rows: Iterable[Any], *, name: str = "script.py", rows_per_subtask: int | None = None,
        **keywords: Any,
    ) -> RunningJob:
        """Own a new Python job: ``main(row)`` of the script ``source`` for each row, sandboxed and verified.

        ``rows`` are values ``main`` receives: JSON-like values (dicts, lists, numbers, text,
        None) or bytes. The other keywords are ``submit``'s. Results come as for ``submit``,
        one per subtask of ``rows_per_subtask`` rows; ``job.rows_of(result)`` turns one
        into its rows' records (``index``, ``status``, ``output`` or ``error``, ``log``).

        Raises:
            SandboxError: the script cannot run at all (a syntax error, no ``main``, a failing import),
                with its line.
            ValueError, TypeError: as ``submit``, or a row JSON cannot hold.
        """
        encoded = [encode_row(row) for row in rows]
        return await self.submit(encode_script(name, source), encoded, rows_per_subtask=rows_per_subtask, **keywords)

    async def _check_script(self, module: bytes, limits: TaskLimits, first_row: bytes | None) -> ScriptCheck:
        """Refuse a script that cannot run at all, else measure it (and its first row); the Python runtime
        is prepared first (once per machine)."""
        sandbox = self.jobs.executor.sandbox
        if sandbox.python is None:
            def say(line: str) -> None:
                log.info("Python tasks: %s", line.strip())

            await trio.to_thread.run_sync(functools.partial(sandbox.prepare_python, progress=say))
            self._presence_changed.set()
        script = sandbox.load_python(module)
        if first_row is not None:
            check_row(first_row, 0)
        checked = await trio.to_thread.run_sync(sandbox.check_python, script, limits, first_row)
        if checked.problem is not None:
            raise SandboxError(TaskError("bad_module", checked.problem["message"]))
        return checked

    def _grant_policy(self, thief: PeerId, requested: int) -> int:
        """How many replicas ``thief`` gets of the ``requested`` (``core/steal.grant_for``)."""
        jobs = [job for job in self.jobs.jobs.values() if not job.owner.finished and not job.paused]
        own = sum(job.owner.surplus() for job in jobs)
        alive = self.table.alive()
        poor = self._poor(thief)
        waiting = poor and better_idle(
            thief, (r.peer for r in alive if r.presence.idle > 0 and not self._poor(r.peer)),
            lambda peer: any(job.owner.has_work_for(peer) for job in jobs),
        )  # fmt: skip
        return grant_for(requested, own, 1 + len(alive), poor=poor, better_idle=waiting)

    def _poor(self, peer: PeerId) -> bool:
        return self.reputation.barred_from_quorum(peer) or self.reputation.score(peer) < POOR_SCORE

    # --- instructions ------------------------------------------------------------------------

    def _apply(self, instructions: list[Instruction]) -> None:
        """The one place the peer table's instructions are carried out, every kind of them."""
        for i in instructions:
            if isinstance(i, PeerJoined):
                addr = i.presence.addrs[0] if i.presence.addrs else "no address"
                log.info("peer joined  %s  %s  %d slots", i.peer, addr, i.presence.slots,
                         extra={"event": "peer_joined", "peer": str(i.peer), "addr": addr, "slots": i.presence.slots})
            elif isinstance(i, PeerStale):
                log.info("peer stale   %s  (no presence for a while)", i.peer,
                         extra={"event": "peer_stale", "peer": str(i.peer)})
            elif isinstance(i, PeerGone):
                reason = "goodbye" if i.reason == "goodbye" else "timed out"
                log.info("peer left    %s  (%s)", i.peer, reason,
                         extra={"event": "peer_left", "peer": str(i.peer), "reason": reason.replace(" ", "_")})
                for job in list(self.jobs.jobs.values()):
                    assert self._nursery is not None
                    self._nursery.start_soon(self._drive, job, JobPeerLeft(i.peer, time.monotonic()))
                if self._workers is not None:
                    self._workers.peer_gone(i.peer)
            elif isinstance(i, DialPeer):
                self._spawn_dial(i.peer, i.addrs, wanted=i.wanted)
            elif isinstance(i, DropConnection):
                if i.reason:
                    log.info("reconnecting  %s  (%s)", i.peer, i.reason,
                             extra={"event": "peer_reconnecting", "peer": str(i.peer), "reason": i.reason})  # fmt: skip
                assert self._nursery is not None
                self._nursery.start_soon(self.host.disconnect, i.peer)
            elif isinstance(i, PeerUnreachable):
                log.info("peer unreachable  %s  (%s); trying again in %.0f s, then less and less often, "
                         "up to every %.0f s", i.peer, i.reason, i.retry_in, REDIAL_MAX,
                         extra={"event": "peer_unreachable", "peer": str(i.peer), "reason": i.reason,
                                "retry_in_s": round(i.retry_in, 3)})  # fmt: skip
            elif isinstance(i, PeerReachable):
                log.info("peer reachable again  %s", i.peer, extra={"event": "peer_reachable", "peer": str(i.peer)})
            else:
                assert_never(i)

    def _dial_stranger(self, peer: PeerId, addrs: tuple[str, ...]) -> None:
        """Dial a peer found by mDNS, unless it is us or connected already, and only while this node has
        fewer connections than the peer table's degree (its hello lists the rest of the mesh). As the
        peer table does (``PeerTable.dials_first``), the smaller peer ID dials soon (within
        ``STRANGER_SPREAD``) and the other only if still unconnected after ``DIAL_GRACE``: both sides find
        each other at about the same time."""
        if peer == self.peer_id or self.host.is_connected(peer) or self._nursery is None:
            return
        # Not in the order found: every node starting finds the first nodes up first, and all dialling
        # them at once kept them too busy to answer a hello for a minute (50 nodes on 2 cores).
        soon = self.table.dials_first(peer, self.table.connections())
        delay = random.uniform(0, STRANGER_SPREAD) if soon else DIAL_GRACE

        async def later() -> None:
            await trio.sleep(delay)
            if not self.host.is_connected(peer):
                self._spawn_dial(peer, addrs, stranger=True)

        self._nursery.start_soon(later)

    def _spawn_dial(self, peer: PeerId, addrs: tuple[str, ...], *, wanted: bool = False, stranger: bool = False) -> None:
        """Dial ``peer`` in the background, one dial of it at a time. A routine dial waits for one of
        ``MAX_CONCURRENT_DIALS``; a wanted one (work to steal or results to push wait on the peer) starts
        at once, even while a routine dial of the same peer still waits its turn. A stranger's (an mDNS
        find) is dropped when its turn comes if the node has as many connections and dials as its
        degree: mDNS finds every node of the LAN at once."""
        if self._nursery is None or peer in self._dialing or (peer in self._queued_dials and not wanted):
            return
        (self._dialing if wanted else self._queued_dials).add(peer)

        async def dial() -> None:
            ours = wanted  # whether this task holds the peer's place in ``_dialing``
            try:
                if wanted:
                    await self.host.dial(peer, addrs)
                    return
                async with self._dial_limiter:
                    self._queued_dials.discard(peer)
                    if peer in self._dialing or self.host.is_connected(peer):
                        return  # a wanted dial went ahead of this one
                    if stranger and self.table.connections() + len(self._dialing) >= self.table.degree:
                        return
                    self._dialing.add(peer)
                    ours = True
                    await self.host.dial(peer, addrs)
            except PeerUnavailableError as exc:
                log.debug("%s", exc)
                self._apply(self.table.handle(DialFailed(peer, _reason(exc, peer), time.monotonic())))
            finally:
                if not wanted:
                    self._queued_dials.discard(peer)
                if ours:
                    self._dialing.discard(peer)

        self._nursery.start_soon(dial)

    # --- discovery ---------------------------------------------------------------------------

    async def _keep_bootstrap(self, addr: str) -> None:
        """Stay connected to a bootstrap peer: dial, and dial again with backoff whenever the link is down.

        The backoff is the peer table's (1 s doubling to 60 s, jittered), and the
        log says once that the peer cannot be reached and once that it can again.
        """
        delay = REDIAL_FIRST
        unreachable = False
        while True:
            peer, _ = parse_bootstrap(addr)
            try:
                await self.host.dial_multiaddr(addr)
            except PeerUnavailableError as exc:
                log.debug("bootstrap %s: %s", addr, exc)
                if not unreachable:
                    log.info("bootstrap peer unreachable  %s  (%s); trying again less and less often, up to every "
                             "%.0f s", addr, _reason(exc, peer), REDIAL_MAX,
                             extra={"event": "peer_unreachable", "peer": str(peer), "addr": addr,
                                    "reason": _reason(exc, peer)})  # fmt: skip
                    unreachable = True
                await trio.sleep(delay * random.uniform(1 - REDIAL_JITTER, 1 + REDIAL_JITTER))
                delay = min(delay * 2, REDIAL_MAX)
                continue
            if unreachable:
                log.info("bootstrap peer reachable again  %s", addr,
                         extra={"event": "peer_reachable", "peer": str(peer), "addr": addr})
                unreachable = False
            delay = REDIAL_FIRST
            while self.host.is_connected(peer):
                await trio.sleep(1.0)

    async def _sweep_mdns_cache(self) -> None:
        """Dial the peers mDNS heard of that libp2p never announced (see libp2p_adapter.mdns_cached_peers)."""
        tried: dict[PeerId, float] = {}  # a cached peer that is gone is not dialled at every sweep
        while True:
            now = time.monotonic()
            await trio.sleep((MDNS_SWEEP_FAST if now - self.started_at < 60 else MDNS_SWEEP) * random.uniform(0.8, 1.2))
            now = time.monotonic()
            for peer, addrs in await self.host.mdns_peers():
                if peer not in self.table.peers and now - tried.get(peer, -MDNS_SWEEP) >= MDNS_SWEEP:
                    tried[peer] = now
                    self._dial_stranger(peer, addrs)

    async def _announce_mdns(self) -> None:
        """While this node knows no peer, announce it again now and then and ask the LAN for its peers:
        an announcement lost in a start-up burst is never repeated by libp2p. A node with a peer needs
        none: hellos' hints carry it to the rest of the mesh, and every announcement costs each node on
        the LAN a packet."""
        while True:
            await trio.sleep(MDNS_ANNOUNCE * random.uniform(0.8, 1.2))
            if not self.table.alive() and await self.host.announce_mdns():
                log.warning("mDNS: this node's service was not registered (zeroconf was too busy at start); registered it now")

    async def _dial_mdns_discoveries(self) -> None:
        discoveries = self.host.discoveries
        assert discoveries is not None
        async for info in discoveries:
            self._dial_stranger(from_libp2p_id(info.peer_id), tuple(str(a) for a in info.addrs))

    # --- local API -------------------------------------------------------------------------

    async def _serve_api(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from ..api.discovery import remove_api_file, write_api_file
        from ..api.server import new_token, serve_api

        assert self.config.api is not None
        token = new_token()
        assert self._nursery is not None
        from ..api.dashboard import Sessions, dashboard_routes
        from ..api.job_routes import job_routes

        sessions = Sessions()
        serve = functools.partial(serve_api, extra_routes=[*job_routes(self), *dashboard_routes(self, sessions)],
                                  metrics=self.metrics.exposition, metrics_public=self.config.metrics_public,
                                  sessions=sessions)  # fmt: skip
        url: str = await self._nursery.start(serve, self, self.config.api, token)
        self.api_url = url
        write_api_file(self.config.data_dir, url=url, token=token, peer_id=str(self.peer_id), pid=os.getpid())
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            remove_api_file(self.config.data_dir, os.getpid())

    def _announce_start(self) -> None:
        log.info("meshnode %s  peer %s", __version__, self.peer_id,
                 extra={"event": "node_started", "peer": str(self.peer_id), "version": __version__})
        for addr in self.dial_addrs:
            log.info("listening    %s", addr, extra={"event": "listening", "addr": addr})
        if self.api_url:
            log.info("local API    %s  (token in %s)", self.api_url, Path(self.config.data_dir) / "api.json",
                     extra={"event": "api_ready", "url": self.api_url, "metrics_public": self.config.metrics_public})


def _reason(exc: PeerUnavailableError, peer: PeerId) -> str:
    """Why a dial failed, calling the peer "it": the log line names it already."""
    return str(exc).replace(str(peer), "it")


def _decided(job: RunningJob) -> tuple[int, int]:
    p = job.progress()
    return p.verified + p.failed + p.disputed, p.total


def _open_journal(data_dir: Path) -> Store:
    """The node's journal; one that should exist and does not (the blobs of earlier jobs are here) is an error.

    Raises:
        JournalError: the journal is damaged, lost, or from a newer meshnode.
    """
    blobs = data_dir / "blobs"
    has_blobs = blobs.is_dir() and any(p.is_file() for d in blobs.iterdir() if d.is_dir() for p in d.iterdir())
    expected = f"{blobs} holds the files of earlier jobs" if has_blobs else None
    return Store.open(data_dir / STORE_FILE_NAME, expected=expected)


def _load_reputation(store: Store) -> Reputation:
    try:
        saved = store.load_state("reputation")
        return Reputation() if saved is None else Reputation.from_dict(saved)
    except (JournalError, ValueError) as exc:  # an unreadable record costs the history, never the node
        log.warning("starting with empty peer reputations: %s", exc,
                    extra={"event": "journal_error", "reason": getattr(exc, "kind", "unreadable")})
        return Reputation()


def _load_trust(store: Store) -> TrustBook:
    """The adaptive replication's trust book; streaks went on decaying while the node was off."""
    try:
        saved = store.load_state("trust")
        if saved is None:
            return TrustBook()
        away = time.time() - float(saved["saved"])
        return TrustBook.from_dict(saved["book"], time.monotonic(), away=away)
    except (JournalError, ValueError, KeyError, TypeError) as exc:  # no trust is safe: every subtask gets a quorum
        log.warning("starting with no trusted executors: %s", exc,
                    extra={"event": "journal_error", "reason": getattr(exc, "kind", "unreadable")})  # fmt: skip
        return TrustBook()


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def open_node(config: NodeConfig) -> AsyncIterator[MeshNode]:
    """Start a node; stop it when the block exits (with a goodbye, unless the exit is an error or a cancellation).

    It runs the node in the calling trio program's event loop. asyncio programs, threads and
    plain scripts use the node running on the machine through ``meshnode.Client`` (or
    ``AsyncClient``) instead.

    Raises:
        ConfigError: a setting is invalid, a port is taken, or another node holds the data dir.
        IdentityError: the node key is unreadable or corrupt.
        MeshError: not called from trio (from asyncio, say).
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # under asyncio, trio fails later and obscurely ('RunContext' has no 'runner')
        raise MeshError(
            "open_node runs a node inside a trio program (trio.run); from asyncio or plain code, run "
            "`python -m meshnode` and use meshnode.AsyncClient or meshnode.Client"
        ) from None
    with raise_mesh_error_plainly():
        node = MeshNode(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            await node.say_goodbye()
            nursery.cancel_scope.cancel()
