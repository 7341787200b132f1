"""Suite-wide settings.

Hypothesis: locally every run explores new examples (and remembers failures in
.hypothesis/); on CI (``CI`` set) the examples are derandomized, so a run is
reproducible and a failure there is a failure here too.

Leaks: each module ends with a garbage collection, so that an unclosed socket
(a ResourceWarning, an error here) fails the module that leaked it.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common umask 022, under which new files are readable by every local user; restored after."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_each_module() -> Iterator[None]:
    """Collect garbage when a module's tests are done.

    With ``filterwarnings = error`` an unclosed socket or file fails the test that
    happens to be running when the collector finds it; collecting here makes that
    the last test of the module that leaked it, not one in a module far away.
    """
    yield
    gc.collect()


COMPILE_DEADLINE = 900.0  # compiling the interpreter: about a minute on an idle 2-core machine


@dataclass(frozen=True)
class PreparedPython:
    cache: Path  # MESHNODE_CACHE_DIR, for this run
    setup_stderr: str  # what `meshnode python-setup` printed while it compiled
    seconds: float


class _PythonSetup:
    """``meshnode python-setup``, started as soon as the tests are collected when any of them needs the
    Python runtime: it compiles (a minute of both cores) while the other tests run, before those that need it."""

    def __init__(self) -> None:
        reuse = os.environ.get("MESHNODE_TEST_PYTHON_CACHE")
        self.owned = not reuse  # a fresh directory, removed at the end
        self.cache = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="meshnode-python-cache-"))
        self.previous = os.environ.get("MESHNODE_CACHE_DIR")
        os.environ["MESHNODE_CACHE_DIR"] = str(self.cache)  # every process the tests start loads it from here
        self.start = time.monotonic()
        # Not niced: on a machine busy with other work a niced compile starves, and the Python tests wait.
        self.proc = subprocess.Popen([sys.executable, "-m", "meshnode", "python-setup"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.done: PreparedPython | None = None

    def wait(self) -> PreparedPython:
        if self.done is None:
            _, stderr = self.proc.communicate(timeout=COMPILE_DEADLINE)
            assert self.proc.returncode == 0, stderr
            self.done = PreparedPython(self.cache, stderr, time.monotonic() - self.start)
        return self.done

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        if self.previous is None:
            os.environ.pop("MESHNODE_CACHE_DIR", None)
        else:
            os.environ["MESHNODE_CACHE_DIR"] = self.previous
        if self.owned:
            shutil.rmtree(self.cache, ignore_errors=True)


_python_setup: _PythonSetup | None = None


def _needs_python(item: pytest.Item) -> bool:
    return "python_runtime" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that need the Python runtime run last, so that its compile overlaps all the others; those
    that mostly wait on timers (``waits``) run first, beside the compile's minute of both cores.

    Measured on 2 cores with the runtime compiled beforehand: the marked tests take 67 s and 7 CPU-s
    between them; the suite took 617 s with the owner-crash test beside the compile (102 s, 37 s alone).
    """
    items.sort(key=lambda item: (_needs_python(item), item.get_closest_marker("waits") is None))  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    global _python_setup
    if any(_needs_python(item) for item in session.items):
        _python_setup = _PythonSetup()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _python_setup is not None:
        _python_setup.close()


@pytest.fixture(scope="session")
def python_runtime() -> PreparedPython:
    """The Python runtime, compiled once for the whole run by ``meshnode python-setup``, as a user would.

    ``MESHNODE_TEST_PYTHON_CACHE`` names a cache to reuse between runs while working on the code
    (CI leaves it unset: each run compiles once, in a fresh directory).
    """
    assert _python_setup is not None, "started when the tests were collected"
    return _python_setup.wait()
