"""A Merkle tree over a job's inputs: one signature per job, a short proof per subtask.

The owner signs only the root (in the manifest). Each subtask carries the
sibling hashes on the path from its leaf to the root, so any node can check that
the input it was handed is the one the owner committed to at that index, at the
cost of about log2(n) SHA-256 calls of 65 bytes: a few microseconds, against
tens of microseconds for one Ed25519 verification per subtask.

The shape is RFC 6962's (Certificate Transparency): leaves and inner nodes are
hashed with different prefix bytes, and a level with an odd number of nodes
promotes its last node unchanged. The verifier walks the path using the index
and the leaf count, so a proof also fixes the position of its leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["MerkleTree", "leaf_hash", "verify_proof"]

_sha256 = hashlib.sha256


def leaf_hash(input_sha256: bytes, input_size: int) -> bytes:
    """The leaf for one input: its size and its SHA-256."""
    return _sha256(b"\x00" + input_size.to_bytes(8, "big") + input_sha256).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """All levels of the tree, so that proofs can be read off without rehashing."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        level = list(leaves)
        self._levels = [level]
        while len(level) > 1:
            nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self._levels.append(nxt)
            level = nxt

    @property
    def root(self) -> bytes:
        return self._levels[-1][0]

    def __len__(self) -> int:
        return len(self._levels[0])

    def proof(self, index: int) -> tuple[bytes, ...]:
        """The sibling hashes from leaf ``index`` up to the root."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return tuple(path)


def verify_proof(root: bytes, index: int, count: int, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """True when ``proof`` shows that ``leaf`` sits at ``index`` of a ``count``-leaf tree with ``root``."""
    if not 0 <= index < count:
        return False
    node = leaf
    used = 0
    size = count
    while size > 1:
        if index % 2 or index + 1 < size:
            if used == len(proof):
                return False
            sibling = proof[used]
            used += 1
            node = _node(sibling, node) if index % 2 else _node(node, sibling)
        index //= 2
        size = (size + 1) // 2
    return used == len(proof) and node == root
