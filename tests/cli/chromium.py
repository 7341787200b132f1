"""Chromium for the dashboard tests and benchmarks/dashboard.py: the one on PATH, or else Debian's
``chromium`` package, installed once per machine when they run as root.

Installing it takes about 12 s here (``apt-get install --no-install-recommends``, 80 MiB of packages);
the test drives it with the Python ``playwright`` package (from PyPI, no browser download), which
launches this binary rather than one of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["chromium", "chromium_binary"]

PACKAGE = "chromium"
INSTALL_TIMEOUT = 600.0  # seconds for each apt-get call: a slow mirror, not a hang


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The path of a Chromium binary."""
    try:
        return chromium_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))


def chromium_binary() -> Path:
    """The path of a Chromium binary, installed first when there is none and this runs as root.

    Raises:
        RuntimeError: there is none and it cannot be installed (the message says how to).
    """
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is not None:
        return Path(found)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"the dashboard's browser tests and benchmark need Chromium: install Debian's or "
                           f"Ubuntu's {PACKAGE} package (as root, they would install it themselves)")  # fmt: skip
    start = time.monotonic()
    installed = _apt_get("install", "-y", "--no-install-recommends", PACKAGE)
    if installed.returncode != 0:  # no package lists yet: a fresh machine
        _apt_get("update")
        installed = _apt_get("install", "-y", "--no-install-recommends", PACKAGE)
    found = shutil.which("chromium")
    if installed.returncode != 0 or found is None:
        raise RuntimeError(f"`apt-get install {PACKAGE}` failed:\n{installed.stderr}")
    print(f"chromium: installed from Debian's {PACKAGE} package in {time.monotonic() - start:.1f} s")
    return Path(found)


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", *args], capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT)
