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

__all__ = ["MerkleTree", "leaf_hash", "tree_levels", "verify_proof"]

_sha256 = hashlib.sha256


def leaf_hash(input_sha256: bytes, input_size: int) -> bytes:
    """The leaf for one input: its size and its SHA-256."""
    return _sha256(b"\x00" + input_size.to_bytes(8, "big") + input_sha256).digest()


def _node(left: bytes | memoryview, right: bytes | memoryview) -> bytes:
    h = _sha256(b"\x01")
    h.update(left)
    h.update(right)
    return h.digest()


def tree_levels(leaves: bytes) -> list[bytes]:
    """Every level of the tree over ``leaves`` (32-byte hashes, concatenated), leaves first.

    Flat bytes, not lists of hashes: a million-leaf tree is 64 MB, not a few
    hundred megabytes of small objects.
    """
    if not leaves or len(leaves) % 32:
        raise ValueError("a Merkle tree needs at least one leaf, and leaves of 32 bytes")
    levels = [bytes(leaves)]
    level = memoryview(levels[0])
    while len(level) > 32:
        count = len(level) // 32
        out = bytearray()
        for i in range(0, 32 * (count - 1), 64):
            out += _node(level[i : i + 32], level[i + 32 : i + 64])
        if count % 2:
            out += level[-32:]  # an odd last node is promoted unchanged
        levels.append(bytes(out))
        level = memoryview(levels[-1])
    return levels


class MerkleTree:
    """All levels of the tree, so that proofs can be read off without rehashing."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if any(len(leaf) != 32 for leaf in leaves):
            raise ValueError("Merkle leaves are 32-byte hashes")
        self._levels = tree_levels(b"".join(leaves))

    @classmethod
    def from_levels(cls, levels: Sequence[bytes]) -> MerkleTree:
        """A tree from ``levels`` as ``tree_levels`` returns them (say, read back from the journal).

        Raises:
            ValueError: the levels do not have the sizes of one tree.
        """
        count = len(levels[0]) // 32 if levels else 0
        sizes = [len(level) for level in levels]
        expected = []
        while count >= 1:
            expected.append(32 * count)
            if count == 1:
                break
            count = (count + 1) // 2
        if not sizes or sizes != expected:
            raise ValueError("these levels are not one Merkle tree")
        tree = cls.__new__(cls)
        tree._levels = list(levels)
        return tree

    @property
    def levels(self) -> list[bytes]:
        return list(self._levels)

    @property
    def root(self) -> bytes:
        return self._levels[-1][:32]

    def __len__(self) -> int:
        return len(self._levels[0]) // 32

    def proof(self, index: int) -> tuple[bytes, ...]:
        """The sibling hashes from leaf ``index`` up to the root."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if 32 * sibling < len(level):
                path.append(level[32 * sibling : 32 * sibling + 32])
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
