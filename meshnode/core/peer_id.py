"""Peer IDs: the libp2p name of a node's Ed25519 public key.

A libp2p peer ID for an Ed25519 key is the *identity* multihash of the
protobuf-encoded public key, so the key can be read back out of the ID and a
signature checked from the peer ID alone. This module does that without
importing libp2p (which costs 1.5 s to import), and a test checks that it
agrees byte for byte with ``libp2p.peer.id.ID``.
"""

from __future__ import annotations

import functools

from typing import Final

from ..errors import WireError

__all__ = ["PeerId"]

# multihash identity (0x00), length 36, then protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}
_ED25519_PREFIX: Final = b"\x00\x24\x08\x01\x12\x20"
_PEER_ID_LEN: Final = len(_ED25519_PREFIX) + 32

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}


@functools.lru_cache(maxsize=4096)  # about 50 us each, and a mesh has few peers
def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise WireError(f"invalid character {c!r} in peer ID") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * zeros + body


class PeerId:
    """An Ed25519 libp2p peer ID (``12D3KooW...``).

    Equal peer IDs compare and hash equal; ``str()`` gives the base58 form users see.
    """

    __slots__ = ("_bytes",)

    def __init__(self, raw: bytes) -> None:
        """Wrap the binary form of a peer ID.

        Raises:
            WireError: ``raw`` is not the identity-multihash peer ID of an Ed25519 key.
        """
        if type(raw) is not bytes or len(raw) != _PEER_ID_LEN or not raw.startswith(_ED25519_PREFIX):
            raise WireError("not an Ed25519 peer ID")
        self._bytes = raw

    @classmethod
    def from_public_key(cls, public_key: bytes) -> PeerId:
        if len(public_key) != 32:
            raise WireError("an Ed25519 public key is 32 bytes")
        return cls(_ED25519_PREFIX + bytes(public_key))

    @classmethod
    def from_base58(cls, text: str) -> PeerId:
        """Parse the text form, e.g. from a CLI flag or a trust file.

        Raises:
            WireError: not a base58 Ed25519 peer ID.
        """
        if not 40 <= len(text) <= 60:
            raise WireError(f"{text[:60]!r} is not a peer ID")
        return cls(_b58decode(text))

    def to_bytes(self) -> bytes:
        return self._bytes

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key inlined in the ID."""
        return self._bytes[len(_ED25519_PREFIX) :]

    def __str__(self) -> str:
        return _b58encode(self._bytes)

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerId) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __lt__(self, other: PeerId) -> bool:
        return self._bytes < other._bytes
