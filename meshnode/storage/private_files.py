"""Folders only this user can enter: the data dir holds job inputs, outputs and compiled code.

A folder made 0700 keeps other local users out of everything under it, whatever
the modes of the files inside, so checking the folders at open is enough to take
back access an older version (or a permissive umask) gave away.
"""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = ["private_dir"]


def private_dir(path: Path, *, create: bool = True) -> None:
    """Make ``path`` a folder for this user only: created 0700, or made so if it has wider access.

    Missing parents are created with the umask's mode, like any folder of the user's own.

    Args:
        path: the folder.
        create: create it when missing; when false a missing folder is left missing.

    Raises:
        OSError: the folder cannot be created, or its mode cannot be changed.
    """
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif not path.is_dir():
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700)
