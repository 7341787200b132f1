"""BlobStore: content addressing, atomic idempotent writes, verified reads, caps."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from meshnode.storage.blobs import BlobStore
from tests.modes import mode_of


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_then_get_round_trips_and_files_the_blob_under_its_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"a small blob"
    sha = store.put(data)
    assert sha == hashlib.sha256(data).digest()
    hex_name = sha.hex()
    assert store.path(sha) == tmp_path / "blobs" / hex_name[:2] / hex_name
    assert store.path(sha).read_bytes() == data
    assert store.has(sha)
    assert store.get(sha) == data


def test_an_empty_blob_is_a_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"")
    assert store.get(sha) == b""


def test_a_missing_blob_is_none(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = hashlib.sha256(b"never stored").digest()
    assert not store.has(sha)
    assert store.get(sha) is None


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    first = store.put(b"twice")
    before = store.path(first).stat()
    assert store.put(b"twice") == first
    assert store.path(first).stat().st_ino == before.st_ino  # not rewritten
    assert files_under(tmp_path) == [store.path(first)]


def test_a_corrupt_file_is_treated_as_missing_and_deleted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"precious bytes")
    store.path(sha).write_bytes(b"precious bytez")  # same size: only the hash can tell
    assert store.get(sha) is None
    assert not store.path(sha).exists()
    assert store.put(b"precious bytes") == sha  # and it can be stored again
    assert store.get(sha) == b"precious bytes"


def test_put_repairs_a_truncated_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"0123456789")
    store.path(sha).write_bytes(b"01234")
    store.put(b"0123456789")
    assert store.get(sha) == b"0123456789"


def test_a_blob_over_the_cap_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_blob_size=16)
    store.put(b"x" * 16)
    with pytest.raises(ValueError, match="over the 16-byte limit"):
        store.put(b"x" * 17)
    assert store.total_bytes() == 16


def test_total_bytes_adds_up_blobs_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.total_bytes() == 0
    store.put(b"a" * 100)
    store.put(b"b" * 1000)
    store.put(b"a" * 100)
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / ".in-progress.tmp").write_bytes(b"c" * 5000)  # a write in progress
    assert store.total_bytes() == 1100


def test_a_hash_must_be_32_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(ValueError, match="32 bytes"):
        store.get(b"\x00" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        store.has(b"")


def test_writes_leave_no_temporary_files_even_when_they_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)
    shas = [store.put(os.urandom(n)) for n in (0, 1, 4096, 1 << 20)]
    assert files_under(tmp_path) == sorted(store.path(s) for s in shas)

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put(b"this one fails")
    assert files_under(tmp_path) == sorted(store.path(s) for s in shas)
    assert not store.has(hashlib.sha256(b"this one fails").digest())


def test_temporary_files_a_crashed_writer_left_behind_are_removed_on_open(tmp_path: Path) -> None:
    shard = tmp_path / "ab"
    shard.mkdir()
    stale, fresh = shard / ".stale.tmp", shard / ".fresh.tmp"
    stale.write_bytes(b"half a blob")
    fresh.write_bytes(b"a write in progress")
    an_hour_and_more_ago = time.time() - 3700
    os.utime(stale, (an_hour_and_more_ago, an_hour_and_more_ago))
    BlobStore(tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # possibly another writer's, still at work


@pytest.mark.usefixtures("permissive_umask")
def test_blobs_and_their_folders_are_private_to_this_user(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "data" / "blobs")
    sha = store.put(b"someone's job input")
    assert mode_of(store.root) == 0o700
    assert mode_of(store.path(sha).parent) == 0o700
    assert mode_of(store.path(sha)) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_blob_folders_readable_by_others_are_narrowed_at_open(tmp_path: Path) -> None:
    sha = BlobStore(tmp_path / "blobs").put(b"input")
    shard = (tmp_path / "blobs" / sha.hex()[:2])
    for folder in (tmp_path / "blobs", shard):
        folder.chmod(0o755)
    store = BlobStore(tmp_path / "blobs")
    assert (mode_of(store.root), mode_of(shard)) == (0o700, 0o700)
    assert store.get(sha) == b"input"
