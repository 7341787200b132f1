"""Listen and advertised addresses.

A wildcard listen address (``/ip4/0.0.0.0/tcp/N``) is not dialable, and libp2p's
mDNS advertises listen addresses exactly as they are, so a wildcard is expanded
into one listen address per interface address. Loopback addresses are not
advertised to peers (a peer dialling 127.0.0.1 reaches itself), unless the node
listens on loopback only, as tests on one machine do.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import psutil

from ..core.peer_id import PeerId
from ..errors import ConfigError, WireError

__all__ = ["advertised", "concrete_listen_addrs", "parse_bootstrap", "split_tcp"]


def split_tcp(addr: str) -> tuple[str, str, int]:
    """``/ip4/1.2.3.4/tcp/7350`` -> ("ip4", "1.2.3.4", 7350).

    Raises:
        ConfigError: not an /ip4 or /ip6 TCP multiaddr.
    """
    parts = addr.strip("/").split("/")
    if len(parts) != 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        raise ConfigError(f"--listen {addr!r}: expected /ip4/ADDRESS/tcp/PORT or /ip6/ADDRESS/tcp/PORT")
    try:
        ip = ipaddress.ip_address(parts[1])
        port = int(parts[3])
    except ValueError:
        raise ConfigError(f"--listen {addr!r}: bad address or port") from None
    if (ip.version == 4) != (parts[0] == "ip4") or not 0 <= port <= 65535:
        raise ConfigError(f"--listen {addr!r}: bad address or port")
    return parts[0], str(ip), port


def _interface_ips(family: socket.AddressFamily) -> list[str]:
    ips = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == family:
                ip = ipaddress.ip_address(a.address.split("%")[0])
                if not ip.is_link_local:
                    ips.append(str(ip))
    return sorted(set(ips), key=lambda s: (not ipaddress.ip_address(s).is_loopback, s))


def concrete_listen_addrs(listen: Sequence[str]) -> list[str]:
    """Expand wildcard addresses into one per interface address."""
    out: list[str] = []
    for addr in listen:
        proto, ip, port = split_tcp(addr)
        if ip in ("0.0.0.0", "::"):
            family = socket.AF_INET if proto == "ip4" else socket.AF_INET6
            out.extend(f"/{proto}/{i}/tcp/{port}" for i in _interface_ips(family))
        else:
            out.append(f"/{proto}/{ip}/tcp/{port}")
    return list(dict.fromkeys(out))


def advertised(addrs: Sequence[str]) -> list[str]:
    """The addresses worth telling peers: all but loopback, unless loopback is all there is."""
    remote = [a for a in addrs if not ipaddress.ip_address(split_tcp(a)[1]).is_loopback]
    return remote or list(addrs)


def parse_bootstrap(addr: str) -> tuple[PeerId, str]:
    """``/ip4/A/tcp/P/p2p/ID`` -> (peer, ``/ip4/A/tcp/P``).

    Raises:
        ConfigError: not of that form.
    """
    head, sep, tail = addr.rpartition("/p2p/")
    try:
        if not sep:
            raise ValueError
        split_tcp(head)
        return PeerId.from_base58(tail), head
    except (ConfigError, WireError, ValueError):
        raise ConfigError(f"--bootstrap {addr!r}: expected /ip4/ADDRESS/tcp/PORT/p2p/PEER_ID") from None
