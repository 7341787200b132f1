"""A content-addressed blob store on disk: job modules and large subtask inputs, by SHA-256.

A blob lives at ``<root>/<first 2 hex digits>/<64 hex digits>``; the two-digit
fan-out keeps directories small with many blobs. The name *is* the content's
hash, which gives three properties the rest of the node relies on:

* Writes are atomic (a temporary file in the same directory, then
  ``os.replace``), so a reader sees a whole blob or none, and ``put`` is
  idempotent: storing the same bytes twice is the same as storing them once.
* Reads are verified: ``get`` re-hashes what it read and treats a file whose
  hash is not its name (disk corruption, a torn write after a crash, someone
  editing the cache) as missing, and deletes it so the blob is fetched again.
* Because every read is verified, writes are not fsynced: a crash can at worst
  lose or tear a cached blob, which ``get`` then notices.

Only this user can read the store: its folders are 0700 (checked when the store
opens, so folders an older version made wider are narrowed) and blobs are 0600.

The I/O is plain synchronous file I/O. Small blobs are quick enough to handle on
the trio loop; callers on the loop handling big blobs (anything near a
megabyte or more) should run ``put`` and ``get`` in a worker thread with
``trio.to_thread.run_sync`` so that hashing and disk I/O do not stall the node.
The methods are safe to call from several threads at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Final

from .private_files import private_dir

__all__ = ["DEFAULT_MAX_BLOB_SIZE", "BlobStore"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BLOB_SIZE: Final = 1 << 30  # 1 GiB

_TEMP_PREFIX: Final = "."
_TEMP_SUFFIX: Final = ".tmp"
# A temporary file this old belongs to a process that died mid-write (a live
# writer holds its file for as long as writing one blob takes).
_STALE_TEMP_AGE: Final = 3600.0
_BLOB_NAME: Final = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    """Blobs on disk under ``root``, named by their SHA-256.

    Args:
        root: the store's directory; created if missing.
        max_blob_size: the largest blob ``put`` accepts, in bytes.
    """

    def __init__(self, root: Path, *, max_blob_size: int = DEFAULT_MAX_BLOB_SIZE) -> None:
        if max_blob_size < 0:
            raise ValueError("max_blob_size cannot be negative")
        self.root = root
        self.max_blob_size = max_blob_size
        private_dir(root)
        for shard in self._shards():
            private_dir(shard)
        self._remove_stale_temp_files()

    def path(self, sha256: bytes) -> Path:
        """Where the blob with this hash is (or would be) stored.

        Raises:
            ValueError: ``sha256`` is not 32 bytes.
        """
        if len(sha256) != 32:
            raise ValueError(f"a SHA-256 is 32 bytes, got {len(sha256)}")
        name = sha256.hex()
        return self.root / name[:2] / name

    def has(self, sha256: bytes) -> bool:
        """Whether a file for this hash exists. Cheap: it does not verify the content (``get`` does)."""
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> bytes:
        """Store ``data`` and return its SHA-256. Storing bytes that are already there is a no-op.

        Raises:
            ValueError: ``data`` is over ``max_blob_size``.
            OSError: the disk refused the write; nothing was stored.
        """
        if len(data) > self.max_blob_size:
            raise ValueError(f"a blob of {len(data)} bytes is over the {self.max_blob_size}-byte limit")
        sha256 = hashlib.sha256(data).digest()
        target = self.path(sha256)
        with contextlib.suppress(FileNotFoundError):
            # Same name and same size: the same blob, barring corruption, which get() catches.
            if target.stat().st_size == len(data):
                return sha256
        target.parent.mkdir(exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600, and os.replace keeps the mode
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return sha256

    def get(self, sha256: bytes) -> bytes | None:
        """The blob's bytes, verified against its hash; None when it is missing or corrupt.

        A corrupt file is deleted, so the caller can fetch and store the blob again.

        Raises:
            OSError: the file exists but cannot be read.
        """
        target = self.path(sha256)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).digest() != sha256:
            log.warning("blob %s is corrupt on disk (%d bytes); deleting it", sha256.hex(), len(data))
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return None
        return data

    def total_bytes(self) -> int:
        """The size of every stored blob added up (temporary files of writes in progress excluded)."""
        total = 0
        for shard in self._shards():
            for entry in os.scandir(shard):
                if _BLOB_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):  # deleted as we walked
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    def _shards(self) -> list[Path]:
        return [p for p in self.root.iterdir() if len(p.name) == 2 and p.is_dir()]

    def _remove_stale_temp_files(self) -> None:
        """Delete what writers that died mid-``put`` left behind."""
        cutoff = time.time() - _STALE_TEMP_AGE
        for shard in self._shards():
            for tmp in shard.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()
