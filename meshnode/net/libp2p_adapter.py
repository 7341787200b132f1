"""Where py-libp2p 0.8.1 misbehaves, contained at the edge. Each item is measured (../shared/LIBP2P_NOTES.md).

* ``import libp2p`` imports every transport its package offers, and with them
  aioquic (QUIC), httpx and requests (AutoTLS's ACME client; httpx's command line
  brings click, pygments and rich) and dnspython (multiaddr's ``/dns`` resolver):
  1,269 modules, 82 MiB of RSS. meshnode dials TCP to IP addresses only, and uses
  none of them. ``_import_libp2p_quietly`` lets those four packages be inert
  modules while libp2p imports, then takes them out of ``sys.modules`` again, so
  a program that imports them later gets the real ones: measured, 72 MiB and
  1,011 modules, and an idle node at 93 MiB instead of 106 MiB.
* ``Swarm.dial_peer`` always waits ``_HAPPY_EYEBALLS_DELAY`` (0.25 s) even after the
  first address connected: a loopback connect took 252 ms instead of 6 ms. The
  module constant is set to 0 (multi-address peers are then dialled in parallel).
* Importing libp2p resets its ``libp2p`` logger (``libp2p/utils/logging.py``,
  run by ``import libp2p``): level WARNING, no handlers, ``propagate = False``.
  Whatever meshnode had configured before the import is lost, and every WARNING
  and ERROR record then reaches stderr through Python's last-resort handler as a
  bare line ("Failed to open TCP stream: all attempts to connect to
  127.0.0.1:40573 failed"): no timestamp, and not JSON under ``--log-json``.
  With ``LIBP2P_DEBUG`` set, the import also prints a line and starts a thread
  that writes records to stderr and a temporary file by itself.
  ``apply_patches`` imports libp2p with ``LIBP2P_DEBUG`` hidden, then
  ``route_libp2p_logging`` makes the logger propagate again, at the level the
  node's logging set (``configure_logging``), so every libp2p record goes
  through meshnode's handler and format.
* libp2p logs WARNING and ERROR records (some through the *root* logger) for
  ordinary events such as a peer closing a stream during shutdown, or each
  failed TCP connect of a dial; users saw multi-line tracebacks for nothing.
  meshnode reports those events itself, once, in its own words (a peer that
  cannot be reached, a refused stream), so libp2p's records are shown only at
  ``--log-level debug`` (CRITICAL ones always): the ``libp2p`` logger's level
  is set accordingly, and ``LibP2PNoiseFilter`` drops the records its code
  logs through the root logger.
* A dial to a peer with a different private-swarm key does not fail: it hangs
  for 30 to 40 s in protocol negotiation. Every dial is bounded by the caller.
* The TCP listener sets SO_REUSEPORT, so a second node on the same port binds
  without error and the kernel splits connections between the two.
  ``port_is_free`` checks with a plain bind first.
* Leaving ``host.run()`` with connections still open leaves their TCP sockets
  unclosed (a ResourceWarning when they are collected; one per outbound
  connection in a measured run, none after an explicit ``disconnect``).
  ``open_host`` disconnects every peer itself before the host stops, then
  closes the raw connection of every dial it made (a disconnect does not
  always reach the socket: measured, one leak in a run of four nodes).
* Leaving ``host.run()`` leaves the TCP listeners open: the swarm closes them
  in a ``finally`` that runs inside the cancelled service, so its first await
  raises ``Cancelled`` before it gets to them. Measured in one process: after a
  node stopped, a plain connect to its port succeeded 3 times out of 3, and its
  Noise handshake still answered peers' dials (they then failed with "Cannot
  schedule task after service has stopped" instead of "connection refused"), so
  the port could not be used again. ``close_listeners`` closes them, shielded,
  before the host stops.
* Even so, a node stopped by a failing test on a busy machine (load 11)
  left a TCP socket of a connection it had dialled unclosed (a ResourceWarning
  that failed a later test). The TCP transport now keeps a weak set of every
  connection it dials or accepts, and ``close_tcp_streams`` closes whichever
  are still open once the host has stopped.
* A dial whose security upgrade fails or is cancelled (a peer with another
  swarm key, a dial that hits our timeout) leaves its TCP socket unclosed (one
  ResourceWarning per failed dial, measured with three nodes on two swarm keys).
  ``track_dial_sockets`` records the raw connections a dial opens, and
  ``MeshHost.dial`` closes them when the dial fails.
* ``Swarm.dial_peer`` dials the addresses in the peerstore, not the ones passed
  to ``host.connect`` (it adds them after those it has), and of those only the
  first TCP address. The peerstore keeps what identify reported over earlier
  connections for 2 hours, so a peer that came back on a new port was dialled
  at its old one. ``MeshHost.dial`` first sets the peer's peerstore addresses
  to exactly the ones it was given (``use_only_addrs``): the advertised
  addresses from the peer's presence, or a bootstrap address.
* ``Swarm.dial_peer`` retries each address three more times (0.1, 0.2, 0.4 s
  apart) before it fails: one dial of a vanished peer made four TCP connects
  and four WARNING lines. With a redial every 5 s, one presence from a peer that
  then vanished cost each node about 240 failed connects in 5 minutes. The node
  keeps its own redial schedule with backoff (core/peers.py), so
  ``disable_dial_retries`` makes a dial one connect per address.
* After a dial to a peer fails, the swarm refuses to dial it again for 60 s
  (a "negative cache"), even when its link is back. The node keeps its own
  redial schedule (core/peers.py), so ``MeshHost.dial`` lifts that block first.
* The swarm's AutoConnector aims for (low + high watermark) / 2 = 150
  connections and every 30 s dials every peer the peerstore knows, whatever its
  state ("below target (150); initiating 150 new dials" in the log); setting the
  watermarks to 0 does not stop it, and the high watermark also drives pruning.
  The node dials whom it wants itself (bootstrap, mDNS, presence) on its own
  schedule, so ``stop_auto_connector`` stops it once the host runs.
* A host that vanishes silently (link down, power cut: no FIN, no RST) is never
  noticed by libp2p: yamux pings every 30 s but ignores a missing answer, and a
  blocked read waits for TCP's retransmission timeout (minutes; nothing within
  60 s in a measured run). Presence used to be the liveness signal, at the price
  of a message per node every 1.5 s, which grew with the mesh. Now every TCP
  connection libp2p dials or accepts gets kernel keepalives
  (``keep_alive``): probes after ``KEEPALIVE_IDLE`` s of quiet, closed after
  ``KEEPALIVE_COUNT`` unanswered ones ``KEEPALIVE_INTERVAL`` s apart, or when
  sent data stays unacknowledged for ``USER_TIMEOUT`` s. The kernel does this at
  no cost to the node's CPU; libp2p then sees the read fail and closes the
  connection.
* mDNS discovery resolves each service it sees one after another on zeroconf's
  thread, each with up to three 5 s queries, and announces a peer only when a
  resolution succeeds, once; an update, or a service whose resolution failed, is
  never announced again. With 50 nodes starting together on 2 cores, 22 of them
  found nobody (the mesh split in two for good: 764 of 2,450 table entries alive
  after 300 s). ``mdns_cached_peers`` reads every peer of our service type from
  zeroconf's record cache (filled by every answer on the LAN, resolved or not),
  on zeroconf's own event loop, and the node dials those it does not know, a few
  times a minute. That healed most of the split (1,979 of 2,450 entries), but 5
  nodes still found nobody and nobody found them (why their start-up announcements
  went unheard is not known: every namespace, cut off or not, counted UDP send
  errors during the burst), and zeroconf never announces again. ``mdns_announce`` announces our service again;
  the node does so every 10 s while it knows no peer.
* mDNS discovery calls handlers registered on a process-global singleton, from a
  zeroconf thread. ``MdnsBridge`` hands each event to the trio loop.
* A gossip RPC frame over 1 MiB makes pubsub reset the stream before any
  validator runs (it logs a warning and nothing else), so the application never
  sees it. ``watch_oversize_gossip`` wraps the frame reader pubsub uses to tell
  the host whose swarm read it, so the node counts it.
* Pubsub keeps one outbound stream per peer and opens none for a new connection
  while it holds one. When a peer restarts and reconnects before its old
  connection is noticed closed (an in-process restart took 9 ms), the stream on
  the dead connection stays registered (pubsub does not drop a peer that still
  has a live connection); the next write to it fails, and that failure makes
  pubsub forget the subscriptions the peer just announced on the new connection.
  We then never sent that peer anything and it never heard us (measured: every
  time, until the silent connection was dropped 15 s later).
  ``replace_stale_pubsub_stream`` swaps such a stream for one on the live
  connection, keeping the subscriptions, whenever a connection opens or closes.
  Whatever other interleaving leaves pubsub without a connected peer's stream or
  its subscription (it never announces it again) shows at the other end as a peer
  whose presence stops coming by gossip; that end drops the connection
  (``core/peers.GOSSIP_SILENT_INTERVALS``), and both set pubsub up afresh on a new one.
* Every pubsub RPC carries the sender's signed peer record, and the receiver
  checks its signature and stores it in the peerstore twice per RPC (in
  ``Pubsub`` and again in ``GossipSub.handle_rpc``), although it is the same
  record each time. In a profile of a node of the 50-node LAN while it set up
  its connections, the two checks and the sender's rebuilding of the record
  (``env_to_send_in_RPC``) were 11 % of all samples. ``_check_sender_records_once``
  makes a host check a peer's record only when its bytes differ from the last
  one that passed; an RPC whose record fails is still ignored, as before.
* Pubsub retries a peer's outbound stream while the peer stays connected, but only
  when opening it raised ``SwarmException`` or ``StreamClosed``; a protocol
  negotiation that times out raises ``StreamFailure`` (a ``HostException``), and
  pubsub then gives that peer up for as long as the connection lasts: nothing is
  ever sent to it, and it never hears our subscription. Measured on the 50-node
  LAN starting on 2 cores, each node connected to about 8 peers: nodes held
  pubsub streams to 0-3 of their 11-12 connected peers, and three heard no gossip
  at all. ``_retry_failed_pubsub_streams`` makes that failure retried like the
  others (0.5 s doubling to 10 s, while the peer is connected).
* Pubsub replays its message cache (the last 3 heartbeats' messages of a topic,
  each as an RPC of its own with the sender's record rebuilt) to every peer
  whose stream opens, and again on every reconnect; gossipsub's specification
  and the go and rust implementations do not. In a profile of the owner of a
  job on the 50-node LAN, 49 thieves dialling it at once and reconnecting under
  load, the replays were 19 % of its samples and most of its socket writes,
  while its steal answers waited (about a third of the thieves' steals timed
  out in stream negotiation). A new peer hears of everyone from the hello on the
  connection, and a message it missed by moments from gossip's IHAVE, so
  ``_no_replay_to_new_peers`` makes the replay do nothing.
* Yamux sends a window update after every read of a stream, however little
  it read: each gossip message, steal or push a node receives costs it a frame
  back, through Noise (measured: 336 updates between two nodes for 100 gossip
  messages of 1 KiB sent one at a time). In the same profile, those updates
  were 17 % of the owner's samples. ``_window_updates_by_half_windows`` lets an
  update go only once half the receive window has been read, go-yamux's rule:
  flow control is unchanged (a stream that read half its window sends one
  update for all of it), and a stream of small messages sends none.
* Pubsub seeds its message counter with the time in whole seconds and adds one per
  message, and peers drop message IDs (sender, counter) seen in the last 120 s: a
  node restarted after publishing more than one message a second reuses spent
  counters, and its presence was ignored for 3 to 19 s (as long as it had run).
  ``open_host`` seeds the counter in nanoseconds, as go and rust libp2p do.
"""

from __future__ import annotations

import contextvars
import errno
import importlib.abc
import importlib.machinery
import logging
import os
import socket
import sys
import time
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trio

__all__ = [
    "LibP2PNoiseFilter",
    "MdnsBridge",
    "apply_patches",
    "close_listeners",
    "disable_dial_retries",
    "keep_alive",
    "mdns_announce",
    "mdns_cached_peers",
    "SILENT_HOST_DETECTED",
    "close_tcp_streams",
    "port_is_free",
    "replace_stale_pubsub_stream",
    "route_libp2p_logging",
    "stop_auto_connector",
    "track_dial_sockets",
    "use_only_addrs",
    "watch_oversize_gossip",
]

# The raw connections opened by the dial running in this context (tasks a dial
# spawns inherit the context, and with it the same list).
_dial_sockets: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("dial_sockets", default=None)

# Every TCP connection each transport (one per host) dialled or accepted, while it is referenced.
_tcp_streams: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()

_patched = False

# TCP keepalive on every libp2p connection (see above): a silent host's connections
# close within ``SILENT_HOST_DETECTED`` s whether they were idle or had data in flight
# (measured on a namespace LAN with the link cut: both connections closed 14-18 s after
# with 5 + 3 x 3 s and 15 s).
KEEPALIVE_IDLE = 10  # seconds of quiet before the first probe (each idle connection: a probe and its ACK this often)
KEEPALIVE_INTERVAL = 2  # seconds between probes
KEEPALIVE_COUNT = 3  # unanswered probes before the kernel closes the connection
USER_TIMEOUT = 10  # seconds sent data may stay unacknowledged
SILENT_HOST_DETECTED = max(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT, USER_TIMEOUT)

# The level the ``libp2p`` logger gets whenever it is (re)attached to meshnode's
# logging: py-libp2p's own default until ``configure_logging`` chooses.
_libp2p_level = logging.WARNING

# Who to tell when a swarm's pubsub refuses an oversize frame, by swarm.
_oversize_watchers: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()


def apply_patches() -> None:
    """Idempotent: the fixes that must be in place before any host is created."""
    global _patched
    if not _patched:
        _import_libp2p_quietly()
        import libp2p.network.swarm as _swarm

        _swarm._HAPPY_EYEBALLS_DELAY = 0.0
        _record_tcp_connections()
        _count_oversize_gossip()
        _check_sender_records_once()
        _retry_failed_pubsub_streams()
        _no_replay_to_new_peers()
        _window_updates_by_half_windows()
        _patched = True
    route_libp2p_logging()  # also when something else imported libp2p first


def _retry_failed_pubsub_streams() -> None:
    """A pubsub stream whose protocol negotiation failed is retried while the peer is connected (see above)."""
    import libp2p.pubsub.pubsub as pubsub
    from libp2p.host.exceptions import StreamFailure
    from libp2p.network.exceptions import SwarmException

    original = pubsub.Pubsub._handle_new_peer

    async def handle_new_peer(self: Any, peer_id: Any) -> None:
        try:
            await original(self, peer_id)
        except StreamFailure as exc:
            raise SwarmException(f"pubsub stream to {peer_id}: {exc}") from exc  # the kind pubsub retries

    setattr(pubsub.Pubsub, "_handle_new_peer", handle_new_peer)


def _no_replay_to_new_peers() -> None:
    """A peer whose pubsub stream opens is not sent the message cache again (see above)."""
    import libp2p.pubsub.gossipsub as gossipsub

    async def send_recent_messages(self: Any, peer_id: Any, topic: str) -> None:
        return None

    setattr(gossipsub.GossipSub, "send_recent_messages", send_recent_messages)


def _window_updates_by_half_windows() -> None:
    """Yamux acknowledges what a stream read once half its window is read, not after every read (see above)."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    original = YamuxStream._auto_tune_and_send_window_update

    async def update_by_half_windows(self: Any, *, bytes_read: int = 0) -> None:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        if self.target_recv_window - (self.recv_window + buffered) < self._grow_threshold():
            return  # less than half the window read: the sender still has credit for half of it
        await original(self, bytes_read=bytes_read)  # grows the window back to its target in one update

    setattr(YamuxStream, "_auto_tune_and_send_window_update", update_by_half_windows)


# Seconds a peer's record that passed is taken again unchecked: well within the 2 hours libp2p keeps it.
SENDER_RECORD_RECHECK = 600.0


def _check_sender_records_once() -> None:
    """Check a peer's signed peer record in pubsub RPCs only when it changed (see above)."""
    import libp2p.pubsub.floodsub as floodsub
    import libp2p.pubsub.gossipsub as gossipsub
    import libp2p.pubsub.pubsub as pubsub
    from libp2p.pubsub.utils import maybe_consume_signed_record as check

    # host -> peer -> (its record that passed, when); weak: a stopped host's entries go with it
    passed: weakref.WeakKeyDictionary[Any, dict[Any, tuple[bytes, float]]] = weakref.WeakKeyDictionary()

    def consume(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        records = passed.setdefault(host, {})
        last = records.get(peer_id)
        now = time.monotonic()
        if last is not None and last[0] == msg.senderRecord and now - last[1] < SENDER_RECORD_RECHECK:
            return True  # the same bytes passed a moment ago, and are in the peerstore
        if not check(msg, host, peer_id):
            return False
        if len(records) >= 4096:  # one record per peer: bounded however many peers come and go
            records.clear()
        records[peer_id] = (msg.senderRecord, now)
        return True

    for module in (floodsub, gossipsub, pubsub):
        module.maybe_consume_signed_record = consume  # type: ignore[attr-defined]


def _import_libp2p_quietly() -> None:
    """Import libp2p without letting ``LIBP2P_DEBUG`` start its own log writer, nor loading what meshnode never uses (see above)."""
    hidden = os.environ.pop("LIBP2P_DEBUG", None)
    try:
        with _inert(UNUSED_BY_MESHNODE):
            import libp2p  # noqa: F401
    finally:
        if hidden is not None:
            os.environ["LIBP2P_DEBUG"] = hidden


# Packages libp2p imports for transports and clients meshnode does not use (see above).
UNUSED_BY_MESHNODE = frozenset({"aioquic", "httpx", "requests", "dns"})


class _InertMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert


class _Inert(metaclass=_InertMeta):
    """Stands for any class or function of an inert package: it can be subclassed, called and subscripted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __class_getitem__(cls, item: Any) -> Any:
        return cls


class _InertModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _InertMeta(name, (_Inert,), {})


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, packages: frozenset[str]) -> None:
        self.packages = packages

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] in self.packages:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _InertModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@contextmanager
def _inert(packages: frozenset[str]) -> Iterator[None]:
    """Within the block, importing one of ``packages`` (not already imported) gives an inert module."""
    packages = frozenset(p for p in packages if p not in sys.modules)
    finder = _InertFinder(packages)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n, m in sys.modules.items() if isinstance(m, _InertModule)]:
            del sys.modules[name]


def route_libp2p_logging(level: int | None = None) -> None:
    """Send libp2p's records through the process's logging configuration (undoing its import-time reset).

    Args:
        level: the ``libp2p`` logger's level from now on; ``None`` keeps the
            last one set (py-libp2p's WARNING until one is).
    """
    global _libp2p_level
    if level is not None:
        _libp2p_level = level
    logger = logging.getLogger("libp2p")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(_libp2p_level)


def _record_tcp_connections() -> None:
    from libp2p.transport.tcp.tcp import TCP

    original_dial = TCP.dial
    original_create_listener = TCP.create_listener

    async def dial(self: Any, maddr: Any) -> Any:
        raw: Any = await original_dial(self, maddr)
        keep_alive(raw.stream)
        _tcp_streams.setdefault(self, weakref.WeakSet()).add(raw.stream)
        opened = _dial_sockets.get()
        if opened is not None:
            opened.append(raw)
        return raw

    def create_listener(self: Any, handler_function: Any) -> Any:
        async def handler(stream: Any) -> None:
            keep_alive(stream)
            _tcp_streams.setdefault(self, weakref.WeakSet()).add(stream)
            await handler_function(stream)

        return original_create_listener(self, handler)

    TCP.dial = dial  # type: ignore[method-assign]
    TCP.create_listener = create_listener  # type: ignore[method-assign]


def keep_alive(tcp_stream: Any) -> None:
    """Turn on kernel keepalive for a libp2p TCP stream (see above); a no-op where the options do not exist."""
    sock = getattr(tcp_stream, "stream", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux (macOS has TCP_KEEPALIVE instead)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT * 1000)
    except (OSError, AttributeError) as exc:  # a closed socket, or a platform without the options
        logging.getLogger(__name__).debug("TCP keepalive not set: %s", exc)


async def close_tcp_streams(host: Any) -> None:
    """Close every TCP connection ``host`` dialled or accepted that is still open (see above).

    Shielded: it runs on the way out of a cancelled node too. A closed stream is left as it is.
    """
    with trio.CancelScope(shield=True):
        for transport in host.get_network().transport_manager.get_transports():
            for stream in list(_tcp_streams.get(transport, ())):
                try:
                    await stream.close()
                except Exception:
                    pass


@contextmanager
def track_dial_sockets() -> Iterator[list[Any]]:
    """Collect the raw TCP connections opened by dials inside the block."""
    opened: list[Any] = []
    token = _dial_sockets.set(opened)
    try:
        yield opened
    finally:
        _dial_sockets.reset(token)


class LibP2PNoiseFilter(logging.Filter):
    """Drops records below CRITICAL that come from inside libp2p (or its zeroconf and multiaddr deps)."""

    _MARKERS = ("/libp2p/", "/zeroconf/", "/multiaddr/")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if record.name.startswith(("libp2p", "zeroconf", "multiaddr", "async_service")):
            return False
        return not any(m in record.pathname for m in self._MARKERS)


async def close_listeners(host: Any) -> None:
    """Close the host's TCP listeners (see above); shielded and bounded, as it runs on the way out."""
    listeners = getattr(host.get_network(), "listeners", {})
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        for listener in list(listeners.values()):
            try:
                await listener.close()
            except Exception as exc:
                logging.getLogger(__name__).debug("closing a listener: %s", exc)


def disable_dial_retries(host: Any) -> None:
    """One TCP connect per address per dial: the node schedules redials itself (see above)."""
    from libp2p.network.config import RetryConfig

    host.get_network().retry_config = RetryConfig(max_retries=0)


def use_only_addrs(host: Any, peer_id: Any, addrs: Sequence[Any]) -> None:
    """Make ``addrs`` the only addresses the peerstore holds for ``peer_id``, so a dial uses them (see above).

    libp2p's ``clear_addrs`` raises ``PeerStoreError("peer ID is expired")`` for a peer whose
    addresses outlived their TTL (120 s here) since they were last set: it clears them, then asks
    for them again to decide whether to drop the peer's record. Uncaught, that killed the dialling
    task and with it the node: 1 node in 50, then 7 in 50 once nodes redialled the owner of work they
    wanted, on the 50-node LAN (benchmarks/lan.py). The addresses are gone by then, as asked."""
    from libp2p.peer.peerstore import PeerStoreError

    peerstore = host.get_peerstore()
    try:
        peerstore.clear_addrs(peer_id)
    except PeerStoreError:
        pass  # expired: cleared all the same
    peerstore.add_addrs(peer_id, list(addrs), 120)


def _count_oversize_gossip() -> None:
    import libp2p.pubsub.pubsub as _pubsub
    from libp2p.io.exceptions import MessageTooLarge

    # by name: the module does not re-export it, so mypy --strict refuses the attribute
    original = getattr(_pubsub, "read_varint_prefixed_bytes_limited")

    async def read_limited(reader: Any, max_length: int) -> bytes:
        try:
            data: bytes = await original(reader, max_length)
            return data
        except MessageTooLarge:
            conn = getattr(reader, "swarm_conn", None)
            watcher = _oversize_watchers.get(getattr(conn, "swarm", None))
            if watcher is not None:
                watcher(reader.muxed_conn.peer_id)
            raise

    setattr(_pubsub, "read_varint_prefixed_bytes_limited", read_limited)


def watch_oversize_gossip(host: Any, callback: Callable[[Any], None]) -> None:
    """Call ``callback(libp2p peer ID)`` whenever ``host``'s pubsub refuses an oversize frame from that peer."""
    _oversize_watchers[host.get_network()] = callback


def port_is_free(host: str, port: int) -> bool:
    """Whether a plain bind (no SO_REUSEPORT) to host:port succeeds right now."""
    if port == 0:
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR, as every TCP server sets: a port whose old connections sit in
        # TIME_WAIT is free; one with a live listener still is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class MdnsBridge:
    """Delivers libp2p's mDNS discoveries (zeroconf thread, global registry) into a trio channel."""

    def __init__(self, buffer: int = 256) -> None:
        self._send, self.receive = trio.open_memory_channel[Any](buffer)
        self._token: trio.lowlevel.TrioToken | None = None
        self._handler: Callable[[Any], None] | None = None

    def __enter__(self) -> MdnsBridge:
        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        self._token = trio.lowlevel.current_trio_token()

        def on_found(peer_info: Any) -> None:  # runs on a zeroconf thread
            try:
                assert self._token is not None
                self._token.run_sync_soon(self._deliver, peer_info)
            except trio.RunFinishedError:
                pass

        self._handler = on_found
        peerDiscovery.register_peer_discovered_handler(on_found)
        return self

    def _deliver(self, peer_info: Any) -> None:
        try:
            self._send.send_nowait(peer_info)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # discoveries repeat; dropping one under a burst loses nothing

    def __exit__(self, *exc: object) -> None:
        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        if self._handler is not None:
            peerDiscovery.unregister_peer_discovered_handler(self._handler)
        self._send.close()


async def _on_zeroconf_loop(host: Any, make: Callable[[Any, Any], Any], timeout: float) -> Any:
    """Run the coroutine ``make(mdns, zeroconf)`` on zeroconf's own event loop; None where mDNS is off,
    or when it fails or takes longer than ``timeout`` (zeroconf stopping, a busy machine)."""
    import asyncio

    mdns = getattr(host, "mDNS", None)
    zc = getattr(mdns, "zeroconf", None)
    loop = getattr(zc, "loop", None)
    if zc is None or loop is None or not loop.is_running():
        return None
    future = asyncio.run_coroutine_threadsafe(make(mdns, zc), loop)
    try:
        return await trio.to_thread.run_sync(future.result, timeout)
    except Exception as exc:
        future.cancel()
        logging.getLogger(__name__).debug("mDNS: %s", exc)
        return None


async def mdns_announce(host: Any, timeout: float = 5.0) -> bool:
    """Announce our mDNS service again, and ask the LAN for its peers' services (see above); a no-op
    where mDNS is off. True when the service was not registered and is now.

    libp2p registers the service once, at start, and only logs (hidden below CRITICAL) when zeroconf's
    loop is too busy to finish in time (``EventLoopBlocked``): in a 50-node start-up burst on 2 cores,
    a node that nobody ever heard of, and that heard of nobody, was seen. So the service is
    registered here if it is missing; and since a browser's own queries back off to one an hour,
    a PTR query asks the LAN again for everyone's services, to fill zeroconf's cache.
    """

    async def announce(mdns: Any, zc: Any) -> bool:
        from zeroconf._dns import DNSQuestion
        from zeroconf._protocol.outgoing import DNSOutgoing
        from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR

        info = mdns.broadcaster.service_info
        missing = info is not None and zc.registry.async_get_info_name(info.key) is None
        if missing:
            await (await zc.async_register_service(info, cooperating_responders=True))  # the name is ours: it may echo in the cache
        elif info is not None:
            await (await zc.async_update_service(info))
        query = DNSOutgoing(_FLAGS_QR_QUERY)
        query.add_question(DNSQuestion(mdns.listener.service_type, _TYPE_PTR, _CLASS_IN))
        zc.async_send(query)
        return missing

    return bool(await _on_zeroconf_loop(host, announce, timeout))


async def mdns_cached_peers(host: Any, timeout: float = 5.0) -> list[Any]:
    """The ``PeerInfo`` of every other peer of our mDNS service type in zeroconf's cache (see above).

    Read on zeroconf's event loop (its cache is not safe to read from another thread);
    empty where mDNS is off or zeroconf does not answer within ``timeout``.
    """

    async def read_cache(mdns: Any, zc: Any) -> list[Any]:
        from zeroconf import ServiceInfo
        from zeroconf.const import _CLASS_IN, _TYPE_PTR

        listener, found = mdns.listener, []
        for record in zc.cache.async_all_by_details(listener.service_type, _TYPE_PTR, _CLASS_IN):
            name = record.alias
            if name == listener.service_name:
                continue
            info = ServiceInfo(listener.service_type, name)
            if info.load_from_cache(zc) and (peer := listener._extract_peer_info(info)) is not None:
                found.append(peer)
        return found

    peers: list[Any] | None = await _on_zeroconf_loop(host, read_cache, timeout)
    return peers or []


async def stop_auto_connector(host: Any) -> None:
    """Stop libp2p's background dialler (see above); a no-op where it does not exist."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        await connector.stop()


def replace_stale_pubsub_stream(pubsub: Any, pid: Any) -> bool:
    """If pubsub's stream to ``pid`` is on a closed connection while a live one exists, move it to the live one.

    Pubsub's own handling of a dead stream would also forget the peer's topic
    subscriptions, which by now came in on the live connection (see above); here
    they are kept, and the stream is registered again as for a new peer. Returns
    whether it replaced a stream.
    """
    stream = pubsub.peers.get(pid)
    if stream is None:
        return False
    live = [
        muxed
        for conn in pubsub.host.get_network().get_connections(pid)
        if (muxed := getattr(conn, "muxed_conn", None)) is not None and not getattr(muxed, "is_closed", False)
    ]
    if not live or any(stream.muxed_conn is muxed for muxed in live):
        return False  # still current, or the peer is gone (pubsub cleans up after a gone peer itself)
    del pubsub.peers[pid]
    queue = pubsub.peer_queues.pop(pid, None)
    if queue is not None:
        queue.close()  # its sending task ends without touching the peer's state
    pubsub.router.remove_peer(pid)
    pubsub._schedule_peer_stream_retry(pid)  # a new stream and hello on the live connection
    return True
