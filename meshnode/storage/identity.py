"""The node's identity: one Ed25519 seed in the data dir.

The same 32-byte seed gives the PyNaCl signing key (for manifests and results)
and the libp2p key pair (for Noise and gossip), so the libp2p peer ID *is* the
node's identity, and any signature can be checked from a peer ID alone.

The key file holds the seed as 64 hex characters and a newline. It is created
once, atomically, with mode 0600, and never overwritten: a corrupt or
unreadable file is an error naming the file, because silently minting a new
identity would orphan every job the node owns.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

import nacl.signing

from ..core.peer_id import PeerId
from ..errors import IdentityError

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

__all__ = ["KEY_FILE_NAME", "Identity", "load_or_create_identity", "verify_key_of"]

KEY_FILE_NAME: Final = "identity.key"


class Identity:
    """A node's signing key and the peer ID derived from it."""

    __slots__ = ("peer_id", "signing_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self.signing_key = nacl.signing.SigningKey(seed)
        self.peer_id = PeerId.from_public_key(bytes(self.signing_key.verify_key))

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def libp2p_key_pair(self) -> KeyPair:
        """The same key as a libp2p key pair (imports libp2p, which is slow, only when asked)."""
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(bytes(self.signing_key))

    def __repr__(self) -> str:
        return f"Identity({self.peer_id})"


def verify_key_of(peer_id: PeerId | str) -> nacl.signing.VerifyKey:
    """The Ed25519 verify key inlined in a peer ID: check any node's signature from its ID alone.

    Raises:
        WireError: ``peer_id`` is not an Ed25519 peer ID.
    """
    pid = peer_id if isinstance(peer_id, PeerId) else PeerId.from_base58(peer_id)
    return nacl.signing.VerifyKey(pid.public_key)


def _read_seed(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read the node key {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"the node key {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        seed = bytes.fromhex(text.strip())
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise IdentityError(
            f"the node key {path} is corrupt (expected 64 hex characters); "
            "restore it from a backup, or move it away to start as a new node"
        )
    return seed


def _create_seed(path: Path) -> bytes:
    seed = os.urandom(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(seed.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the key appeared meanwhile: two first runs never leave two identities
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return seed


def load_or_create_identity(data_dir: Path) -> Identity:
    """Load the node key from ``data_dir``, creating the directory and key on first use.

    Raises:
        IdentityError: the key file exists but cannot be read or is corrupt, or the
            data dir cannot be created.
    """
    path = data_dir / KEY_FILE_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise IdentityError(f"cannot create the data dir {data_dir}: {exc}") from exc
    if not path.exists() and not path.is_symlink():
        try:
            return Identity(_create_seed(path))
        except FileExistsError:
            pass  # another process created it first; use theirs
        except OSError as exc:
            raise IdentityError(f"cannot create the node key {path}: {exc}") from exc
    return Identity(_read_seed(path))
