"""The node key: created once with mode 0600, reloaded, never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from libp2p.peer.id import ID

from meshnode.errors import IdentityError
from meshnode.storage.identity import KEY_FILE_NAME, load_or_create_identity, verify_key_of
from tests.modes import mode_of


def test_created_once_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path / "node")
    key_file = tmp_path / "node" / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = load_or_create_identity(tmp_path / "node")
    assert again.peer_id == first.peer_id
    assert list((tmp_path / "node").iterdir()) == [key_file]  # no temporary files left


def test_the_libp2p_identity_is_the_same_key(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path)
    key_pair = identity.libp2p_key_pair()
    assert ID.from_pubkey(key_pair.public_key).to_bytes() == identity.peer_id.to_bytes()
    message = b"signed by one, checked by the other"
    assert key_pair.public_key.verify(message, identity.signing_key.sign(message).signature)


@pytest.mark.parametrize("content", [b"", b"not hex at all\n", b"ab" * 31 + b"\n", b"\xff\xfe" * 40])
def test_corrupt_key_is_an_error_naming_the_file_and_is_kept(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(IdentityError, match=str(key_file)):
        load_or_create_identity(tmp_path)
    assert key_file.read_bytes() == content


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(tmp_path)


def test_unreadable_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).mkdir()  # a directory where the key should be: unreadable as a file
    with pytest.raises(IdentityError, match=KEY_FILE_NAME):
        load_or_create_identity(tmp_path)


def test_the_verify_key_comes_from_the_peer_id_alone(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path)
    signed = identity.signing_key.sign(b"hello")
    assert verify_key_of(str(identity.peer_id)).verify(signed) == b"hello"
    assert verify_key_of(identity.peer_id) == identity.signing_key.verify_key


@pytest.mark.usefixtures("permissive_umask")
def test_a_new_data_dir_is_private_to_this_user(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path / "parent" / "node")
    assert mode_of(tmp_path / "parent" / "node") == 0o700
    assert mode_of(tmp_path / "parent") == 0o755  # an ordinary folder of the user's: not ours to narrow
