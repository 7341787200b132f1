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

import functools
import logging
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from ._version import __version__
from ._errors_unwrap import raise_mesh_error_plainly
from .config import NodeConfig
from .core.peer_id import PeerId
from .core.peers import (
    ConnectionChanged,
    DialPeer,
    DropConnection,
    GoodbyeHeard,
    Instruction,
    PeerGone,
    PeerJoined,
    PeerStale,
    PeerTable,
    PresenceHeard,
    RttMeasured,
    Tick,
)
from .core.presence import Goodbye, Presence, next_seq
from .core.reputation import Reputation
from .core import wire
from .errors import MeshError, PeerUnavailableError, WireError
from .identity import Identity, load_or_create_identity
from .lockfile import DataDirLock
from .net.addresses import parse_bootstrap, split_tcp
from .net.gossip import PresenceGossip
from .net.host import MeshHost, from_libp2p_id, open_host
from .net.streams import read_frame, write_frame
from .net.swarm_key import load_swarm_key
from .sandbox import ENGINE_ID
from .blobs import BlobStore
from .core.job import PeerLeft as JobPeerLeft
from .core.job import Tick as JobTick
from .core.job_messages import PushedResult, ResultPush
from .core.manifest import JobManifest, Subtask
from .core.steal import plan_steal, views_of
from .executor import Executor, RefusedWork
from .jobs import JobManager, JobOptions, RunningJob
from .net.blob_protocol import fetch_from_any, serve_blobs
from .net.job_protocol import push_results, renew_leases, serve_jobs, steal
from .sandbox import Sandbox
from .store import Store
from .sysinfo import cpu_model, gpus, machine_load

__all__ = ["MeshNode", "open_node"]

log = logging.getLogger("meshnode")

GOODBYE_PROTOCOL = "/meshnode/goodbye/1.0.0"
STORE_FILE_NAME = "node.db"
PING_EVERY = 5.0
BOOTSTRAP_RETRY_MAX = 30.0
MAX_CONCURRENT_DIALS = 16


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
        self._dial_limiter = trio.CapacityLimiter(MAX_CONCURRENT_DIALS)
        self._dialing: set[PeerId] = set()
        self._nursery: trio.Nursery | None = None
        self._presence_scope = trio.CancelScope()
        self.reputation = Reputation()  # loaded from the journal when the node starts
        self.jobs: JobManager  # set when the node starts
        self._advertised_surplus = 0
        self._busy = 0
        self._steal_request_id = 0
        self._work_available = trio.Event()

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
        dropped = Counter(self.dropped)
        dropped.update(self.table.dropped)
        return {
            "peer_id": str(self.peer_id),
            "version": __version__,
            "engine": ENGINE_ID,
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
            "dropped_messages": dict(dropped),
            "pid": os.getpid(),
        }

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
                "version": p.version, "engine": p.engine,
                "rtt_ms": None if r.rtt_ms is None else round(r.rtt_ms, 3),
                "last_seen_s": round(now - r.last_seen, 3), "connected": r.connected,
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
        with DataDirLock(self.config.data_dir), Store.open(self.config.data_dir / STORE_FILE_NAME) as store:
            self.reputation = _load_reputation(store)
            blobs = BlobStore(self.config.data_dir / "blobs")
            try:
                with Sandbox(slots=self.config.slots, cache_dir=self.config.data_dir / "modules") as sandbox:
                    executor = Executor(self.identity, sandbox, blobs, store, self.config.trust)
                    self.jobs = JobManager(self.identity, blobs, store, executor, self.reputation)
                    for job in self.jobs.resume():
                        log.info("resumed job    %s  (%d of %d subtasks decided)", job.job_id.hex(), *_decided(job))
                    try:
                        async with open_host(self.identity, self.config.listen, psk=psk, mdns=self.config.mdns) as host:
                            await self._run_on(host, task_status)
                    finally:
                        self.jobs.flush()
            finally:
                store.save_state("reputation", self.reputation.to_dict())

    async def _run_on(self, host: MeshHost, task_status: Any) -> None:
        self._host = host
        self._gossip = PresenceGossip(host, self.identity, self.dropped)
        await self._gossip.start()
        host.set_stream_handler(GOODBYE_PROTOCOL, self._receive_goodbye)
        serve_blobs(host, self.jobs.blobs)
        serve_jobs(host, self.jobs)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_presence)
                nursery.start_soon(self._publish_presence)
                nursery.start_soon(self._watch_connections)
                nursery.start_soon(self._tick)
                nursery.start_soon(self._ping_peers)
                for _ in range(self.config.slots):
                    nursery.start_soon(self._work)
                nursery.start_soon(self._retry_outbox)
                for addr in self.config.bootstrap:
                    nursery.start_soon(self._keep_bootstrap, addr)
                if self.config.mdns:
                    nursery.start_soon(self._dial_mdns_discoveries)
                if self.config.api is not None:
                    await nursery.start(self._serve_api)
                self._announce_start()
                task_status.started(self)
        finally:
            self._host = None

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
        """Report a new number of idle slots; peers hear of it at once."""
        if idle != self._idle:
            self._idle = max(0, min(idle, self.config.slots))
            self._presence_changed.set()

    # --- presence --------------------------------------------------------------------------

    def _presence(self) -> Presence:
        load = machine_load()
        self._seq = next_seq(self._seq, _unix_ms())
        return Presence(
            peer_id=self.peer_id,
            seq=self._seq,
            interval_ms=round(self.config.presence_interval * 1000),
            addrs=tuple(self.host.advertised_addrs[:16]),
            version=__version__,
            engine=ENGINE_ID,
            slots=self.config.slots,
            idle=self._idle,
            surplus=min(self.surplus(), 2**31),
            load1=load.load1,
            mem_free=load.mem_free,
            mem_total=load.mem_total,
            cpu=cpu_model(),
            gpus=gpus(),
        )

    async def _publish_presence(self) -> None:
        assert self._gossip is not None
        interval = self.config.presence_interval
        with self._presence_scope:
            while True:
                try:
                    await self._gossip.publish(self._presence())
                except Exception as exc:  # a broken stream to one peer must not stop presence
                    log.debug("publishing presence failed: %s", exc)
                self._presence_changed = trio.Event()
                # every 1 to 2 s by default, jittered so that nodes started together spread out
                with trio.move_on_after(interval * random.uniform(5 / 6, 7 / 6)):
                    await self._presence_changed.wait()

    async def _receive_presence(self) -> None:
        assert self._gossip is not None
        async for msg in self._gossip.messages():
            now = time.monotonic()
            if isinstance(msg, Presence):
                self._apply(self.table.handle(PresenceHeard(msg, now)))
            else:
                self._apply(self.table.handle(GoodbyeHeard(msg, now)))

    async def _tick(self) -> None:
        while True:
            await trio.sleep(min(0.25, self.config.presence_interval / 4))
            now = time.monotonic()
            self._apply(self.table.handle(Tick(now)))
            for job in list(self.jobs.jobs.values()):
                self.jobs.apply(job, job.owner.handle(JobTick(now)))
            surplus = self.surplus()
            if surplus != self._advertised_surplus:
                self._advertised_surplus = surplus
                self._presence_changed.set()

    async def _watch_connections(self) -> None:
        async for event in self.host.events:
            self._apply(self.table.handle(ConnectionChanged(event.peer, event.connected, time.monotonic())))

    async def _ping_peers(self) -> None:
        while True:
            for record in self.table.alive():
                if record.connected:
                    try:
                        rtt = await self.host.ping(record.peer)
                    except PeerUnavailableError as exc:
                        log.debug("%s", exc)
                        continue
                    self._apply(self.table.handle(RttMeasured(record.peer, rtt, time.monotonic())))
            await trio.sleep(PING_EVERY)

    # --- work ----------------------------------------------------------------------------------

    def surplus(self) -> int:
        """Replicas of this node's jobs that thieves could take now."""
        return sum(job.owner.surplus() for job in self.jobs.jobs.values() if not job.owner.finished)

    def submit(self, module: bytes, inputs: Sequence[bytes], options: JobOptions) -> RunningJob:
        """Own a new job: its replicas go to this node's slots and to any peer that steals them."""
        job = self.jobs.submit(module, inputs, options, _unix_ms())
        self._wake_workers()
        self._presence_changed.set()
        return job

    def _wake_workers(self) -> None:
        self._work_available.set()
        self._work_available = trio.Event()

    async def _work(self) -> None:
        """One slot: run our own jobs' replicas first, else steal from the peer with the most surplus."""
        while True:
            ran = await self._run_own() or await self._steal_and_run()
            if not ran:
                with trio.move_on_after(0.25):
                    await self._work_available.wait()

    async def _occupied(self, work: Any) -> None:
        self._busy += 1
        self.set_idle(self.config.slots - self._busy)
        try:
            await work
        finally:
            self._busy -= 1
            self.set_idle(self.config.slots - self._busy)

    async def _run_own(self) -> bool:
        for job in list(self.jobs.jobs.values()):
            if job.owner.finished:
                continue
            grant = self.jobs.take(job, 1, time.monotonic())
            if grant is not None and grant.replicas:
                try:
                    await self._occupied(self.jobs.run_grant(job, grant))
                except MeshError as exc:
                    log.warning("job %s: %s", job.job_id.hex()[:12], exc)
                return True
        return False

    async def _steal_and_run(self) -> bool:
        idle = self.config.slots - self._busy
        plan = plan_steal(
            [v for v in views_of(self.table, self.reputation) if v.surplus > 0], idle_slots=idle, engine=ENGINE_ID
        )
        if plan is None:
            return False
        self._steal_request_id = next_seq(self._steal_request_id, _unix_ms())
        try:
            reply = await steal(self.host, plan.victim, min(plan.count, 4), self._steal_request_id, ENGINE_ID)
        except (PeerUnavailableError, WireError) as exc:
            log.debug("steal from %s: %s", plan.victim, exc)
            return False
        ran = False
        for grant in reply.grants:
            await self._occupied(self._run_stolen(plan.victim, grant, reply.lease_ms / 1000))
            ran = True
        return ran

    async def _run_stolen(self, owner: PeerId, grant: Any, lease_s: float) -> None:
        pushed: list[PushedResult] = []
        pending: list[tuple[int, int]] = []
        try:
            manifest = wire.open_self_signed(grant.manifest, JobManifest, "owner")
            pending = [(s.index, s.replica) for s in (wire.decode(b, Subtask) for b in grant.subtasks)]
        except WireError as exc:
            log.debug("stolen work from %s: %s", owner, exc)
            return
        async with trio.open_nursery() as renewals:
            # renewed until the results are pushed: a finished replica waiting for the
            # rest of its batch must not lapse and be handed to another node
            if lease_s > 0:
                renewals.start_soon(self._renew, owner, manifest.job_id, pending, lease_s)
            await self._run_subtasks(owner, grant, manifest, pushed)
            if pushed:
                await self._push(owner, pushed)
            renewals.cancel_scope.cancel()

    async def _renew(self, owner: PeerId, job_id: bytes, pending: list[tuple[int, int]], lease_s: float) -> None:
        """Keep the leases of replicas still running from lapsing (a third of the lease, every time)."""
        while True:
            await trio.sleep(lease_s / 3)
            if pending:
                try:
                    await renew_leases(self.host, owner, job_id, list(pending))
                except (PeerUnavailableError, WireError) as exc:
                    log.debug("lease renewal with %s: %s", owner, exc)

    async def _run_subtasks(self, owner: PeerId, grant: Any, manifest: JobManifest, pushed: list[PushedResult]) -> None:
        try:
            await fetch_from_any(self.host, [owner], manifest.module_sha256, self.jobs.blobs)
            for subtask_bytes in grant.subtasks:
                subtask = wire.decode(subtask_bytes, Subtask)
                if subtask.input is None:
                    await fetch_from_any(self.host, [owner], subtask.input_sha256, self.jobs.blobs)
                checked, checked_subtask = self.jobs.executor.check(grant.manifest, subtask_bytes, _unix_ms())
                result = await self.jobs.executor.run(checked, checked_subtask)
                pushed.append(PushedResult(claim=result.envelope, output=result.output))
        except RefusedWork as exc:
            log.warning("refused work from %s: %s", owner, exc.reason)
        except (PeerUnavailableError, WireError) as exc:
            log.debug("stolen work from %s: %s", owner, exc)

    async def _push(self, owner: PeerId, pushed: list[PushedResult]) -> None:
        try:
            ack = await push_results(self.host, owner, ResultPush(results=tuple(pushed)))
        except (PeerUnavailableError, WireError) as exc:
            log.debug("results to %s wait in the outbox: %s", owner, exc)
            return
        for a in ack.acks:
            self.jobs.store.outbox_ack(a.job_id, a.index, a.replica)

    async def _retry_outbox(self) -> None:
        """Results whose owner did not acknowledge them yet: push again, with backoff."""
        while True:
            await trio.sleep(2.0)
            now = time.time()
            due = self.jobs.store.outbox_due(now)
            by_owner: dict[str, list[Any]] = {}
            for entry in due:
                by_owner.setdefault(entry.owner, []).append(entry)
            for owner_text, entries in by_owner.items():
                for e in entries:
                    self.jobs.store.outbox_retry_later(e.job_id, e.index, e.replica, now + min(60.0, 2.0 * 2 ** e.attempts))
                owner = PeerId.from_base58(owner_text)
                if owner == self.peer_id or not self.host.is_connected(owner):
                    continue
                await self._push(owner, [PushedResult(claim=e.claim, output=e.output) for e in entries])

    # --- instructions ------------------------------------------------------------------------

    def _apply(self, instructions: list[Instruction]) -> None:
        for i in instructions:
            if isinstance(i, PeerJoined):
                addr = i.presence.addrs[0] if i.presence.addrs else "no address"
                log.info("peer joined  %s  %s  %d slots", i.peer, addr, i.presence.slots)
            elif isinstance(i, PeerStale):
                log.info("peer stale   %s  (no presence for a while)", i.peer)
            elif isinstance(i, PeerGone):
                log.info("peer left    %s  (%s)", i.peer, "goodbye" if i.reason == "goodbye" else "timed out")
                for job in list(self.jobs.jobs.values()):
                    self.jobs.apply(job, job.owner.handle(JobPeerLeft(i.peer, time.monotonic())))
            elif isinstance(i, DialPeer):
                self._spawn_dial(i.peer, i.addrs)
            elif isinstance(i, DropConnection):
                assert self._nursery is not None
                self._nursery.start_soon(self.host.disconnect, i.peer)

    def _spawn_dial(self, peer: PeerId, addrs: tuple[str, ...]) -> None:
        if peer in self._dialing or self._nursery is None:
            return
        self._dialing.add(peer)

        async def dial() -> None:
            try:
                async with self._dial_limiter:
                    await self.host.dial(peer, addrs)
            except PeerUnavailableError as exc:
                log.debug("%s", exc)
            finally:
                self._dialing.discard(peer)

        self._nursery.start_soon(dial)

    # --- discovery ---------------------------------------------------------------------------

    async def _keep_bootstrap(self, addr: str) -> None:
        """Stay connected to a bootstrap peer: dial, and dial again with backoff whenever the link is down."""
        delay = 1.0
        while True:
            try:
                peer = await self.host.dial_multiaddr(addr)
                delay = 1.0
                while self.host.is_connected(peer):
                    await trio.sleep(1.0)
            except PeerUnavailableError as exc:
                log.debug("bootstrap %s: %s", addr, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, BOOTSTRAP_RETRY_MAX)

    async def _dial_mdns_discoveries(self) -> None:
        discoveries = self.host.discoveries
        assert discoveries is not None
        async for info in discoveries:
            peer = from_libp2p_id(info.peer_id)
            if peer == self.peer_id or self.host.is_connected(peer):
                continue
            self._spawn_dial(peer, tuple(str(a) for a in info.addrs))

    # --- local API -------------------------------------------------------------------------

    async def _serve_api(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from .api.discovery import remove_api_file, write_api_file
        from .api.server import new_token, serve_api

        assert self.config.api is not None
        token = new_token()
        assert self._nursery is not None
        from .api.job_routes import job_routes

        serve = functools.partial(serve_api, extra_routes=job_routes(self))
        url: str = await self._nursery.start(serve, self, self.config.api, token)
        self.api_url = url
        write_api_file(self.config.data_dir, url=url, token=token, peer_id=str(self.peer_id), pid=os.getpid())
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            remove_api_file(self.config.data_dir, os.getpid())

    def _announce_start(self) -> None:
        log.info("meshnode %s  peer %s", __version__, self.peer_id)
        for addr in self.dial_addrs:
            log.info("listening    %s", addr)
        if self.api_url:
            log.info("local API    %s  (token in %s)", self.api_url, Path(self.config.data_dir) / "api.json")


def _decided(job: RunningJob) -> tuple[int, int]:
    p = job.progress()
    return p.verified + p.failed + p.disputed, p.total


def _load_reputation(store: Store) -> Reputation:
    saved = store.load_state("reputation")
    if saved is None:
        return Reputation()
    try:
        return Reputation.from_dict(saved)
    except ValueError as exc:  # an unreadable record costs the history, never the node
        log.warning("starting with empty peer reputations: %s", exc)
        return Reputation()


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def open_node(config: NodeConfig) -> AsyncIterator[MeshNode]:
    """Start a node; stop it when the block exits (with a goodbye, unless the exit is an error or a cancellation).

    Raises:
        ConfigError: a setting is invalid, a port is taken, or another node holds the data dir.
        IdentityError: the node key is unreadable or corrupt.
    """
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
