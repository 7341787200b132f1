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


def tree_levels(leaves: bytes | bytearray) -> list[bytes | bytearray]:
    """Every level of the tree over ``leaves`` (32-byte hashes, concatenated), leaves first.

    Flat bytes, not lists of hashes: a million-leaf tree is 64 MB, not a few
    hundred megabytes of small objects. The leaves are the first level as given
    (not copied).
    """
    if not leaves or len(leaves) % 32:
        raise ValueError("a Merkle tree needs at least one leaf, and leaves of 32 bytes")
    levels: list[bytes | bytearray] = [leaves]
    level = memoryview(leaves)
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


def _level_sizes(count: int) -> list[int]:
    """The byte size of each level of a ``count``-leaf tree, leaves first."""
    sizes = [32 * count]
    while count > 1:
        count = (count + 1) // 2
        sizes.append(32 * count)
    return sizes


class MerkleTree:
    """The levels of the tree above its leaves, so that proofs can be read off without rehashing.

    The leaves themselves are kept only when asked for: an owner holding a
    million-subtask job keeps 32 MB rather than 64, and passes the one leaf a
    proof needs (its sibling's, from the sibling's input hash and size).
    """

    __slots__ = ("_count", "_leaves", "_upper")

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if any(len(leaf) != 32 for leaf in leaves):
            raise ValueError("Merkle leaves are 32-byte hashes")
        levels = tree_levels(b"".join(leaves))
        self._count = len(leaves)
        self._leaves: bytes | None = bytes(levels[0])
        self._upper = [bytes(level) for level in levels[1:]]

    @classmethod
    def from_levels(cls, levels: Sequence[bytes | bytearray], count: int | None = None) -> MerkleTree:
        """A tree from stored levels: all of them, leaves first (then the leaves are kept), or,
        given the leaf ``count``, the levels above the leaves only.

        Raises:
            ValueError: the levels do not have the sizes of one tree.
        """
        with_leaves = count is None
        count = len(levels[0]) // 32 if with_leaves and levels else count or 0
        expected = _level_sizes(count) if count >= 1 else []
        if not with_leaves:
            expected = expected[1:]
        if [len(level) for level in levels] != expected or (with_leaves and not levels):
            raise ValueError("these levels are not one Merkle tree")
        tree = cls.__new__(cls)
        tree._count = count
        tree._leaves = bytes(levels[0]) if with_leaves else None
        tree._upper = [bytes(level) for level in (levels[1:] if with_leaves else levels)]
        if not tree._upper and tree._leaves is None:
            raise ValueError("a one-leaf tree is its leaf: keep the leaves")
        return tree

    @property
    def root(self) -> bytes:
        top = self._upper[-1] if self._upper else self._leaves
        assert top is not None
        return bytes(top[:32])

    def __len__(self) -> int:
        return self._count

    def proof(self, index: int, sibling_leaf: bytes | None = None) -> tuple[bytes, ...]:
        """The sibling hashes from leaf ``index`` up to the root.

        ``sibling_leaf`` is the leaf at ``index ^ 1``, needed (when it exists) if the
        tree does not keep its leaves.
        """
        if not 0 <= index < self._count:
            raise IndexError(index)
        path = []
        sibling = index ^ 1
        if sibling < self._count:
            if self._leaves is not None:
                sibling_leaf = self._leaves[32 * sibling : 32 * sibling + 32]
            if sibling_leaf is None or len(sibling_leaf) != 32:
                raise ValueError(f"the proof of leaf {index} needs the leaf at {sibling}")
            path.append(bytes(sibling_leaf))
        index //= 2
        for level in self._upper[:-1]:
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
