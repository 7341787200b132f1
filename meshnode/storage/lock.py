"""One node per data dir: an exclusive lock held for the node's lifetime.

Two processes sharing one identity would split its jobs and confuse its peers.
The lock is an ``flock`` on ``node.lock``, so the kernel releases it when the
process dies, however it dies; the file holds the owner's PID for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ..errors import ConfigError

__all__ = ["DataDirLock"]


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "node.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Raises ConfigError, naming the other process, when another node holds the data dir."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.path, "a+", encoding="ascii")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ConfigError(
                f"another meshnode (pid {holder}) is running with data dir {self.path.parent}; "
                "stop it, or give this one its own --data-dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
