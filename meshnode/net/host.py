"""``MeshHost``: the libp2p host (TCP, Noise, Yamux, gossipsub, optional mDNS) behind a small interface.

The rest of meshnode speaks ``PeerId`` and text multiaddrs; conversion to
libp2p's types happens here. Connection changes come out of ``events`` as one
``(peer, connected)`` pair per change of "this peer has at least one
connection" (libp2p can hold two connections to one peer and fires its
notifications per connection). Every stream it opens or serves counts the bytes
it carries in ``traffic``, by protocol (read by the node's metrics).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ..core.peer_id import PeerId
from ..errors import ConfigError, PeerUnavailableError
from ..storage.identity import Identity
from .addresses import advertised, concrete_listen_addrs, parse_bootstrap, split_tcp
from .libp2p_adapter import (
    MdnsBridge, apply_patches, close_listeners, close_tcp_streams, disable_dial_retries, mdns_announce, mdns_cached_peers,
    port_is_free, replace_stale_pubsub_stream, stop_auto_connector, track_dial_sockets, use_only_addrs, watch_oversize_gossip,
)  # fmt: skip

__all__ = ["ConnectionEvent", "MeshHost", "open_host"]

log = logging.getLogger(__name__)

GOSSIP_PROTOCOLS = ("/meshsub/1.1.0", "/meshsub/1.0.0")
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW, GOSSIP_DEGREE_HIGH = 6, 4, 12
# After a PRUNE, py-libp2p will not GRAFT that peer again for prune_back_off
# seconds (default 60). Measured with 10 nodes at degree 4: three nodes' meshes
# fell to zero and stayed there, and 41 of 90 table entries went stale for 10 s;
# with 5 s no mesh emptied. Degree 6 (pruning only above 12 peers) with 5 s kept
# every entry alive at 10 nodes.
GOSSIP_PRUNE_BACKOFF = 5
# A dial or a stream open: a busy peer takes seconds to answer (50 nodes on 2 cores: at 5 s, thieves
# gave up on their owner again and again, and each attempt cost it work); a dial to a peer with
# another swarm key hangs for 30 s and more.
DIAL_TIMEOUT = 15.0
PING_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    peer: PeerId
    connected: bool
    opened: bool = False  # a connection to the peer opened (perhaps while an older one was still up)


def to_libp2p_id(peer: PeerId) -> Any:
    from libp2p.peer.id import ID

    return ID(peer.to_bytes())


def from_libp2p_id(pid: Any) -> PeerId:
    return PeerId(pid.to_bytes())


class MeshHost:
    """A running libp2p host. Create it with ``open_host``."""

    def __init__(self, host: Any, pubsub: Any, peer_id: PeerId, listen_addrs: list[str]) -> None:
        self._host = host
        self.pubsub = pubsub
        self.peer_id = peer_id
        self.listen_addrs = listen_addrs
        self._events_send, self.events = trio.open_memory_channel[ConnectionEvent](1024)
        self._ping_streams: dict[PeerId, Any] = {}
        self._ping_locks: dict[PeerId, trio.Lock] = {}
        self._dialed: list[Any] = []  # raw connections of successful dials
        self.discoveries: trio.MemoryReceiveChannel[Any] | None = None  # mDNS finds (libp2p PeerInfo)
        self.traffic: Counter[tuple[str, str]] = Counter()  # bytes by (protocol's short name, "sent" or "received")

    @property
    def advertised_addrs(self) -> list[str]:
        return advertised(self.listen_addrs)

    def dial_addrs(self) -> list[str]:
        """Full multiaddrs (with ``/p2p/<id>``) others can dial, for people and bootstrap flags."""
        return [f"{a}/p2p/{self.peer_id}" for a in self.advertised_addrs]

    # --- connections --------------------------------------------------------------------

    def is_connected(self, peer: PeerId) -> bool:
        return to_libp2p_id(peer) in self._host.get_network().connections

    def connected_peers(self) -> set[PeerId]:
        return {from_libp2p_id(p) for p in self._host.get_network().connections}

    async def dial(self, peer: PeerId, addrs: Sequence[str], timeout: float = DIAL_TIMEOUT) -> None:
        """Connect to ``peer`` at ``addrs`` (libp2p tries the first TCP address of them).

        Only ``addrs`` are dialled, never addresses libp2p remembers from earlier
        connections, and each once: whoever calls this decides when to try again.

        Raises:
            PeerUnavailableError: no address answered within ``timeout`` (or the
                peer is not in our private swarm, which looks the same).
        """
        import multiaddr
        from libp2p.peer.peerinfo import PeerInfo

        maddrs = []
        for a in addrs:
            try:
                split_tcp(a)
                maddrs.append(multiaddr.Multiaddr(a))
            except (ConfigError, ValueError):
                continue  # a peer's advertised address we cannot use; try the others
        if not maddrs:
            raise PeerUnavailableError(f"no usable address for {peer}")
        pid = to_libp2p_id(peer)
        network = self._host.get_network()
        if hasattr(network, "unblock_peer"):
            network.unblock_peer(pid)  # our own schedule decides when to retry
        if not self.is_connected(peer):
            try:
                use_only_addrs(self._host, pid, maddrs)
            except Exception as exc:  # libp2p's peerstore: a dial that cannot start must not take the node down
                raise PeerUnavailableError(f"cannot dial {peer}: {_describe(exc)}") from exc
        with track_dial_sockets() as opened:
            try:
                with trio.fail_after(timeout):
                    await self._host.connect(PeerInfo(pid, maddrs))
            except trio.TooSlowError:
                await _close_all(opened)
                raise PeerUnavailableError(f"dialling {peer} timed out after {timeout:g} s") from None
            except Exception as exc:  # libp2p raises a zoo of types for a failed dial
                await _close_all(opened)
                raise PeerUnavailableError(f"cannot reach {peer} at {maddrs[0]}: {_describe(exc)}") from exc
            except BaseException:
                await _close_all(opened)
                raise
            self._dialed.extend(opened)  # closed when the host stops

    async def dial_multiaddr(self, addr: str, timeout: float = DIAL_TIMEOUT) -> PeerId:
        """Dial a full ``/ip4/.../tcp/.../p2p/<id>`` address (a bootstrap peer).

        Raises:
            ConfigError: the address has no ``/p2p/<peer id>`` part or is malformed.
            PeerUnavailableError: as ``dial``.
        """
        peer, head = parse_bootstrap(addr)
        await self.dial(peer, [head], timeout)
        return peer

    async def mdns_peers(self) -> list[tuple[PeerId, tuple[str, ...]]]:
        """Every peer mDNS has heard of on the LAN, with its addresses (libp2p_adapter.mdns_cached_peers)."""
        return [(from_libp2p_id(info.peer_id), tuple(str(a) for a in info.addrs)) for info in await mdns_cached_peers(self._host)]

    async def announce_mdns(self) -> bool:
        """Announce this node on the LAN by mDNS again, and ask for the others (libp2p_adapter.mdns_announce).
        True when its service had not been registered (libp2p's start-up registration failed)."""
        return await mdns_announce(self._host)

    async def disconnect(self, peer: PeerId) -> None:
        self._ping_streams.pop(peer, None)
        try:
            with trio.move_on_after(2):
                await self._host.disconnect(to_libp2p_id(peer))
        except Exception as exc:
            log.debug("disconnect from %s: %s", peer, exc)

    async def ping(self, peer: PeerId) -> float:
        """Round-trip time in milliseconds over libp2p's ping protocol, on a stream kept open.

        Raises:
            PeerUnavailableError: no answer within ``PING_TIMEOUT``.
        """
        from libp2p.host.ping import ID as PING_ID
        from libp2p.host.ping import perform_ping_roundtrip

        lock = self._ping_locks.setdefault(peer, trio.Lock())
        async with lock:
            try:
                with trio.fail_after(PING_TIMEOUT):
                    stream = self._ping_streams.get(peer)
                    if stream is None:
                        stream = await self._host.new_stream(to_libp2p_id(peer), [PING_ID])
                        self._ping_streams[peer] = stream
                    start = time.perf_counter()
                    await perform_ping_roundtrip(stream)
                    return (time.perf_counter() - start) * 1000
            except Exception as exc:
                self._ping_streams.pop(peer, None)
                raise PeerUnavailableError(f"ping {peer}: {str(exc)[:200] or type(exc).__name__}") from exc

    # --- streams ------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: Callable[[PeerId, Any], Awaitable[None]]) -> None:
        """Serve ``protocol``: ``handler(remote_peer, stream)`` runs per inbound stream.

        The remote peer ID is the one Noise authenticated. The stream is closed (or
        reset) after the handler returns or fails; a failing handler is logged at
        debug level and never takes the node down.
        """
        from libp2p.custom_types import TProtocol

        async def serve(stream: Any) -> None:
            try:
                await handler(from_libp2p_id(stream.muxed_conn.peer_id), _Counted(stream, self.traffic, protocol))
            except Exception as exc:
                log.debug("%s handler: %s", protocol, _describe(exc))
            finally:
                with trio.move_on_after(1):
                    try:
                        await stream.close()
                    except Exception:
                        pass

        self._host.set_stream_handler(TProtocol(protocol), serve)

    async def open_stream(self, peer: PeerId, protocol: str, timeout: float = DIAL_TIMEOUT) -> Any:
        """A new stream to a connected peer.

        Raises:
            PeerUnavailableError: no connection, or the peer does not speak ``protocol``.
        """
        from libp2p.custom_types import TProtocol

        if not self.is_connected(peer):
            # libp2p's new_stream would dial every address its peerstore remembers, a stale one
            # first (seen when a stream opened just as the peer vanished); dialling is dial()'s job
            raise PeerUnavailableError(f"cannot open {protocol} to {peer}: not connected")
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(to_libp2p_id(peer), [TProtocol(protocol)])
        except Exception as exc:
            raise PeerUnavailableError(f"cannot open {protocol} to {peer}: {_describe(exc)}") from exc
        return _Counted(stream, self.traffic, protocol)

    def watch_oversize_gossip(self, callback: Callable[[PeerId], None]) -> None:
        """Call ``callback(peer)`` for each gossip frame over libp2p's 1 MiB limit that ``peer`` sends.

        libp2p resets the stream before any validator sees such a frame (see
        libp2p_adapter); this is the only way to hear of it.
        """
        watch_oversize_gossip(self._host, lambda pid: callback(from_libp2p_id(pid)))

    # --- connection notifications -------------------------------------------------------

    def _connections_changed(self, pid: Any, opened: bool = False) -> None:
        peer = from_libp2p_id(pid)
        now_connected = pid in self._host.get_network().connections
        try:
            self._events_send.send_nowait(ConnectionEvent(peer, now_connected, opened and now_connected))
        except trio.WouldBlock:
            log.warning("connection events are backing up; one was dropped")


class _Counted:
    """A libp2p stream that adds the bytes it reads and writes to its host's ``traffic``; the rest is the stream's."""

    __slots__ = ("_stream", "_traffic", "_sent", "_received")

    def __init__(self, stream: Any, traffic: Counter[tuple[str, str]], protocol: str) -> None:
        name = protocol.split("/")[2] if protocol.startswith("/meshnode/") else protocol  # "/meshnode/jobs/1.0.0": jobs
        self._stream, self._traffic = stream, traffic
        self._sent, self._received = (name, "sent"), (name, "received")

    async def read(self, n: int | None = None) -> bytes:
        data: bytes = await self._stream.read(n)
        self._traffic[self._received] += len(data)
        return data

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)
        self._traffic[self._sent] += len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _describe(exc: BaseException) -> str:
    """One line about a libp2p failure, never empty (its ``StreamEOF`` has no message).

    A failed dial keeps its reason deep in chained exceptions ("unable to connect"
    from "fail to open connection" from "Failed to open TCP stream" from the
    OSError, with a ``MultiError`` of one per address on the way): the innermost
    one that says something is the useful one.
    """
    text = ""
    node: BaseException | None = exc
    for _ in range(12):  # chains are short; never loop on a cycle
        if node is None:
            break
        text = str(node).strip() or text
        inner = getattr(node, "errors", None) or getattr(node, "exceptions", None)  # MultiError, ExceptionGroup
        node = inner[0] if isinstance(inner, (list, tuple)) and inner else node.__cause__
    first = text.splitlines()[0] if text else ""
    return first[:200] or type(exc).__name__


async def _close_all(raw_connections: list[Any]) -> None:
    """Close what a failed dial opened (libp2p leaves it open: see libp2p_adapter)."""
    with trio.CancelScope(shield=True):
        for raw in raw_connections:
            try:
                await raw.close()
            except Exception:
                pass


def _notifee(mesh: MeshHost) -> Any:
    from libp2p.abc import INotifee

    class Notifee(INotifee):
        async def connected(self, network: Any, conn: Any) -> None:
            replace_stale_pubsub_stream(mesh.pubsub, conn.muxed_conn.peer_id)
            mesh._connections_changed(conn.muxed_conn.peer_id, opened=True)

        async def disconnected(self, network: Any, conn: Any) -> None:
            replace_stale_pubsub_stream(mesh.pubsub, conn.muxed_conn.peer_id)
            mesh._connections_changed(conn.muxed_conn.peer_id)

        async def opened_stream(self, network: Any, stream: Any) -> None:
            pass

        async def closed_stream(self, network: Any, stream: Any) -> None:
            pass

        async def listen(self, network: Any, multiaddr: Any) -> None:
            pass

        async def listen_close(self, network: Any, multiaddr: Any) -> None:
            pass

    return Notifee()


@asynccontextmanager
async def open_host(
    identity: Identity, listen: Sequence[str], *, psk: bytes | None = None, mdns: bool = False
) -> AsyncIterator[MeshHost]:
    """Start a libp2p host with gossipsub; stop it on exit.

    Args:
        identity: the node key; the host's peer ID is its peer ID.
        listen: TCP multiaddrs; wildcards are expanded to each interface address.
        psk: a 32-byte private-swarm key: only nodes with the same key can connect.
        mdns: announce and discover peers on the LAN by multicast DNS.

    Raises:
        ConfigError: a listen address is malformed, or its port is taken.
    """
    apply_patches()
    import libp2p
    import multiaddr
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.pubsub.gossipsub import GossipSub
    from libp2p.pubsub.pubsub import Pubsub

    addrs = concrete_listen_addrs(listen)
    if not addrs:
        raise ConfigError("no address to listen on (is any network interface up?)")
    for a in addrs:
        _, ip, port = split_tcp(a)
        if not port_is_free(ip, port):
            raise ConfigError(
                f"TCP port {port} on {ip} is in use (another meshnode?); "
                "choose another with --listen /ip4/0.0.0.0/tcp/PORT"
            )
    if psk is not None and len(psk) != 32:
        raise ConfigError("a swarm key is 32 bytes")
    host = libp2p.new_host(
        key_pair=identity.libp2p_key_pair(),
        psk=psk.hex() if psk is not None else None,
        enable_mDNS=mdns,
        # libp2p's own limits on a connection's upgrade and a stream's negotiation (10 s each)
        # would cut short what DIAL_TIMEOUT allows a busy peer
        connection_config=ConnectionConfig(
            dial_timeout=DIAL_TIMEOUT,
            inbound_upgrade_timeout=DIAL_TIMEOUT,
            outbound_upgrade_timeout=DIAL_TIMEOUT,
            inbound_stream_protocol_negotiation_timeout=DIAL_TIMEOUT,
            outbound_stream_protocol_negotiation_timeout=DIAL_TIMEOUT,
        ),
    )
    gossipsub = GossipSub(
        protocols=[TProtocol(p) for p in GOSSIP_PROTOCOLS],
        degree=GOSSIP_DEGREE,
        degree_low=GOSSIP_DEGREE_LOW,
        degree_high=GOSSIP_DEGREE_HIGH,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        prune_back_off=GOSSIP_PRUNE_BACKOFF,
        # The built-in limit (10 messages per topic per second per forwarder,
        # applied to our own publishes too) silently drops presence bursts.
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, gossipsub)
    # py-libp2p seeds its message counter with the time in whole seconds and adds one per
    # message; peers drop message IDs (sender, counter) seen in the last 120 s. A node that
    # published more than one message a second and restarts reuses counters it already
    # spent, and peers ignore its presence for about as long as it had run (measured:
    # 3-19 s). Nanoseconds, as go-libp2p-pubsub and rust-libp2p seed it, never go back.
    pubsub.counter = time.time_ns()
    # The mDNS handler must be registered before host.run(): libp2p reports the peers
    # it finds while run() is still announcing us (about 1.6 s), and never again.
    with MdnsBridge() if mdns else contextlib.nullcontext() as bridge:
        try:
            async with host.run([multiaddr.Multiaddr(a) for a in addrs]):
                transport_addrs = [str(a) for a in host.get_transport_addrs()]
                mesh = MeshHost(host, pubsub, identity.peer_id, transport_addrs or addrs)
                mesh.discoveries = bridge.receive if bridge is not None else None
                async with _running(mesh, host, pubsub, gossipsub):
                    yield mesh
        finally:
            await close_tcp_streams(host)  # whatever libp2p left open


@asynccontextmanager
async def _running(mesh: MeshHost, host: Any, pubsub: Any, gossipsub: Any) -> AsyncIterator[None]:
    """Gossip running on a started host; every connection closed on the way out."""
    from libp2p.tools.anyio_service.context import background_trio_service

    await stop_auto_connector(host)
    disable_dial_retries(host)
    host.get_network().register_notifee(_notifee(mesh))
    async with background_trio_service(pubsub), background_trio_service(gossipsub):
        await pubsub.wait_until_ready()
        try:
            yield
        finally:
            await close_connections(mesh)
            await close_listeners(host)


async def close_connections(mesh: MeshHost) -> None:
    """Close every connection before the host stops (see libp2p_adapter: host.run() leaks their sockets).

    Shielded and bounded: it runs on the way out of a cancelled node too.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        async with trio.open_nursery() as nursery:
            for peer in mesh.connected_peers():
                nursery.start_soon(mesh.disconnect, peer)
    # disconnect() does not always reach the socket of a connection we dialled
    await _close_all(mesh._dialed)
