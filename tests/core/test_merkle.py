"""Merkle commitments: proofs verify, and nothing else does."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.merkle import MerkleTree, tree_levels, verify_proof

leaves = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


def rfc6962_root(nodes: list[bytes]) -> bytes:
    """The recursive definition in RFC 6962 §2.1 (over already-hashed leaves)."""
    if len(nodes) == 1:
        return nodes[0]
    k = 1 << ((len(nodes) - 1).bit_length() - 1)  # largest power of two below n
    return hashlib.sha256(b"\x01" + rfc6962_root(nodes[:k]) + rfc6962_root(nodes[k:])).digest()


@given(leaves)
def test_root_matches_rfc6962(nodes: list[bytes]) -> None:
    assert MerkleTree(nodes).root == rfc6962_root(nodes)


@given(leaves)
def test_every_proof_verifies(nodes: list[bytes]) -> None:
    tree = MerkleTree(nodes)
    for i, leaf in enumerate(nodes):
        assert verify_proof(tree.root, i, len(nodes), leaf, tree.proof(i))


@given(leaves, st.data())
def test_no_proof_verifies_at_another_position_count_or_after_tampering(nodes: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(nodes)
    i = data.draw(st.integers(0, len(nodes) - 1))
    proof = tree.proof(i)
    leaf = nodes[i]
    j = data.draw(st.integers(0, len(nodes) - 1))
    if nodes[j] != leaf:
        assert not verify_proof(tree.root, j, len(nodes), leaf, proof)
    assert not verify_proof(tree.root, i, len(nodes), hashlib.sha256(leaf).digest(), proof)
    assert not verify_proof(tree.root, len(nodes), len(nodes), leaf, proof)
    assert not verify_proof(tree.root, i, len(nodes), leaf, proof + (leaf,))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = hashlib.sha256(bad[k]).digest()
        assert not verify_proof(tree.root, i, len(nodes), leaf, bad)
        assert not verify_proof(tree.root, i, len(nodes), leaf, proof[:-1])


@given(leaves, st.data())
def test_a_tree_without_its_leaves_gives_the_same_proofs_given_the_sibling_leaf(nodes: list[bytes], data: st.DataObject) -> None:
    full = MerkleTree(nodes)
    levels = tree_levels(b"".join(nodes))
    assert MerkleTree.from_levels(levels).root == full.root
    if len(nodes) == 1:
        with pytest.raises(ValueError):
            MerkleTree.from_levels(levels[1:], 1)
        return
    upper = MerkleTree.from_levels(levels[1:], len(nodes))
    assert upper.root == full.root and len(upper) == len(nodes)
    i = data.draw(st.integers(0, len(nodes) - 1))
    sibling = nodes[i ^ 1] if i ^ 1 < len(nodes) else None
    assert upper.proof(i, sibling) == full.proof(i)
    if sibling is not None:
        with pytest.raises(ValueError):
            upper.proof(i)  # without the leaf beside it, there is no proof
    with pytest.raises(ValueError):
        MerkleTree.from_levels(levels[1:], 2 * len(nodes) + 2)  # its first level above the leaves is longer
