"""Where a node keeps its state, and the settings every command shares.

Precedence for every setting: command-line flag, then ``MESHNODE_*`` environment
variable, then the built-in default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from .core.manifest import TaskLimits

__all__ = ["DEFAULT_LIMITS", "default_data_dir", "default_slots", "resolve_data_dir"]

APP_NAME: Final = "meshnode"

# One subtask by default may use 1e12 fuel (minutes of compute), 256 MiB of
# memory and 10 minutes of wall time, and return 64 MiB.
DEFAULT_LIMITS: Final = TaskLimits(
    fuel=1_000_000_000_000,
    memory=256 << 20,
    timeout_ms=600_000,
    max_output=64 << 20,
)


def default_data_dir() -> Path:
    """The platform's per-user data directory for meshnode."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME


def resolve_data_dir(flag: str | os.PathLike[str] | None) -> Path:
    """``--data-dir``, else ``MESHNODE_DATA_DIR``, else the platform's user data dir."""
    chosen = flag or os.environ.get("MESHNODE_DATA_DIR") or default_data_dir()
    return Path(chosen).expanduser().resolve()


def default_slots() -> int:
    """One slot per physical core (wasm is CPU-bound; hyperthreads add little)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
