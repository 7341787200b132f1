"""File permissions as tests compare them."""

from __future__ import annotations

import os
import stat


def mode_of(path: os.PathLike[str] | str) -> int:
    """The permission bits of ``path``, e.g. ``0o600``."""
    return stat.S_IMODE(os.stat(path).st_mode)
