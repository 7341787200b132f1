"""Private swarm keys in go-libp2p's ``swarm.key`` format.

    /key/swarm/psk/1.0.0/
    /base16/
    <64 hex characters>

Only nodes with the same key can connect: a node without it cannot join or
read anything. py-libp2p's private network is not wire-compatible with
go-libp2p's (PLATFORM_NOTES.md §1), so the key works between meshnode nodes only.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from ..errors import ConfigError

__all__ = ["format_swarm_key", "load_swarm_key"]

_HEADER = "/key/swarm/psk/1.0.0/"


def load_swarm_key(path: Path) -> bytes:
    """Read and check a swarm key file; the 32 key bytes.

    Raises:
        ConfigError: unreadable, or not a valid swarm.key file (the message says which line).
    """
    try:
        lines = [line.strip() for line in path.read_text(encoding="ascii").strip().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the swarm key {path}: {exc}") from exc
    if len(lines) != 3 or lines[0] != _HEADER:
        raise ConfigError(f"{path} is not a swarm key (expected the lines {_HEADER}, /base16/, and the key)")
    try:
        if lines[1] == "/base16/":
            key = bytes.fromhex(lines[2])
        elif lines[1] == "/base64/":
            key = base64.b64decode(lines[2], validate=True)
        else:
            raise ConfigError(f"{path}: unsupported key encoding {lines[1]!r} (use /base16/)")
    except (ValueError, binascii.Error):
        raise ConfigError(f"{path}: the key line is not valid {lines[1].strip('/')}") from None
    if len(key) != 32:
        raise ConfigError(f"{path}: a swarm key is 32 bytes, this one is {len(key)}")
    return key


def format_swarm_key(key: bytes | None = None) -> str:
    """A new (or the given) key as swarm.key text."""
    key = key if key is not None else os.urandom(32)
    return f"{_HEADER}\n/base16/\n{key.hex()}\n"
