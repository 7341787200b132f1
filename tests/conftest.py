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
from collections.abc import Iterator

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
