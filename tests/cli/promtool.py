"""``promtool``, Prometheus's own checker, for the metrics tests: the one on PATH, or else the one in
Debian's ``prometheus`` package, fetched once per test run.

The package is downloaded and only its ``promtool`` unpacked into the run's temporary directory, not
installed: installing it would also start a Prometheus server on machines with an init system, and
takes several times longer (measured: 7 s to install, 1.5 s to download and unpack). A machine whose
package lists are empty (a fresh CI machine) gets them first, when the tests run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["promtool"]

PACKAGE = "prometheus"
FETCH_TIMEOUT = 300.0  # seconds for each apt-get call: a slow mirror, not a hang


@pytest.fixture(scope="session")
def promtool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The path of a working ``promtool``."""
    found = shutil.which("promtool")
    if found is not None:
        yield Path(found)
        return
    folder = tmp_path_factory.mktemp("promtool")
    start = time.monotonic()
    binary = _unpack(_download(folder), folder)
    print(f"promtool: fetched from Debian's {PACKAGE} package in {time.monotonic() - start:.1f} s")
    yield binary


def _download(folder: Path) -> Path:
    if shutil.which("apt-get") is None:
        pytest.fail(f"promtool is needed and missing, and there is no apt-get to fetch it: install Prometheus's "
                    f"promtool (it is in Debian's and Ubuntu's {PACKAGE} package) and put it on PATH")  # fmt: skip
    fetched = _apt_get("download", PACKAGE, cwd=folder)
    if fetched.returncode != 0 and os.geteuid() == 0:  # no package lists yet: a fresh machine
        _apt_get("update")
        fetched = _apt_get("download", PACKAGE, cwd=folder)
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if fetched.returncode != 0 or not debs:
        hint = "" if os.geteuid() == 0 else " (as root, the tests would run apt-get update first)"
        pytest.fail(f"promtool is needed and missing, and `apt-get download {PACKAGE}` failed{hint}:\n{fetched.stderr}")
    return debs[0]


def _unpack(deb: Path, folder: Path) -> Path:
    """``usr/bin/promtool`` out of the package, without installing it."""
    contents = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=FETCH_TIMEOUT,
                              check=True)  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder), "./usr/bin/promtool"], input=contents.stdout, timeout=FETCH_TIMEOUT,
                   check=True)  # fmt: skip
    binary = folder / "usr" / "bin" / "promtool"
    checked = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=FETCH_TIMEOUT)
    assert checked.returncode == 0, f"the unpacked promtool does not run: {checked.stderr}"
    return binary


def _apt_get(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=FETCH_TIMEOUT)  # fmt: skip
