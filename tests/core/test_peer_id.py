"""Peer IDs computed here agree byte for byte with libp2p's."""

from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshnode.core.peer_id import PeerId
from meshnode.errors import WireError


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_peer_id_matches_libp2p_and_gives_back_the_key(seed: bytes) -> None:
    key_pair = create_new_key_pair(seed)
    theirs = ID.from_pubkey(key_pair.public_key)
    ours = PeerId.from_public_key(bytes(nacl.signing.SigningKey(seed).verify_key))
    assert ours.to_bytes() == theirs.to_bytes()
    assert str(ours) == theirs.to_base58()
    assert PeerId.from_base58(theirs.to_base58()) == ours
    assert ours.public_key == key_pair.public_key.to_bytes()
    assert ID.from_base58(str(ours)).extract_public_key().to_bytes() == ours.public_key


@pytest.mark.parametrize("text", ["", "hello", "12D3KooW" + "0" * 44, "Qm" + "a" * 44, "1" * 52])
def test_bad_peer_ids_are_refused(text: str) -> None:
    with pytest.raises(WireError):
        PeerId.from_base58(text)
