"""Suite-wide settings.

Hypothesis: locally every run explores new examples (and remembers failures in
.hypothesis/); on CI (``CI`` set) the examples are derandomized, so a run is
reproducible and a failure there is a failure here too.
"""

from __future__ import annotations

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

