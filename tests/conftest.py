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
import subprocess
import sys
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


@pytest.fixture(scope="session")
def python_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreparedPython]:
    """The Python runtime, compiled once for the whole run by ``meshnode python-setup``, as a user would.

    Every process the tests start inherits ``MESHNODE_CACHE_DIR`` and loads it from there.
    ``MESHNODE_TEST_PYTHON_CACHE`` names a cache to reuse between runs while working on the code
    (CI leaves it unset: each run compiles once, in a fresh directory).
    """
    reuse = os.environ.get("MESHNODE_TEST_PYTHON_CACHE")
    cache = Path(reuse) if reuse else tmp_path_factory.mktemp("python-cache")
    previous = os.environ.get("MESHNODE_CACHE_DIR")
    os.environ["MESHNODE_CACHE_DIR"] = str(cache)
    start = time.monotonic()
    setup = subprocess.run([sys.executable, "-m", "meshnode", "python-setup"], capture_output=True, text=True,
                           timeout=COMPILE_DEADLINE)  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    try:
        yield PreparedPython(cache, setup.stderr, time.monotonic() - start)
    finally:
        if previous is None:
            del os.environ["MESHNODE_CACHE_DIR"]
        else:
            os.environ["MESHNODE_CACHE_DIR"] = previous
