"""Memory settings for a process that is a node: malloc's arenas and trims, and the cyclic GC's start-up objects.

Freed memory goes back to the system (glibc's ``malloc_trim``; elsewhere nothing).

CPython returns freed objects to malloc, and glibc keeps the freed pages in the
arena of the thread that allocated them: the journal writer, the sandbox slots
and trio's worker threads each have one. Measured on an owner running a
1,000,000-subtask job (benchmarks/large_job.py): its RSS rose from 183 MiB after
the submit to 260 MiB a minute later while the live Python objects stayed at
about 34 MB, and ``malloc_trim(0)`` gave back 24-29 MiB at each try. Dask's
workers trim the same way. With at most two arenas (``limit_malloc_arenas``,
which ``meshnode run`` calls before it starts a thread) the same owner stood at
235 MiB instead of 260 MiB: its threads hold the GIL for most of what they
allocate, so more arenas buy no speed.

The cyclic garbage collector's full collections walk every tracked object, and
a node that has started holds about 100,000 (libp2p, trio, the node's own
state) that live as long as it does. On an owner running 2,000 trivial subtasks
(benchmarks/jobs.py, about half a second), full collections took 48-60 ms of
its event loop in two jobs of three, and all collections together 58-69 ms: an
eighth of the job. ``freeze_start_up`` moves the objects of the start-up out of
the collector's sight (``gc.freeze``, as pre-fork servers do): the same jobs
then spent 9-14 ms in collections. ``meshnode run`` calls it once the node is
up; a program embedding the node may call it itself once it has started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

__all__ = ["TRIM_EVERY", "freeze_start_up", "limit_malloc_arenas", "trim_free_memory"]

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h

TRIM_EVERY = 30.0  # seconds between trims while the node works; a trim takes about a millisecond


@functools.cache
def _glibc(function: str) -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        found: Callable[..., int] = getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    return found


def trim_free_memory() -> bool:
    """Hand free heap pages back to the system; True when there is a ``malloc_trim`` to call."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let malloc keep at most ``arenas`` arenas for the whole process; True when it took the setting.

    For a process that is a node and nothing else (``meshnode run``): a program
    embedding the node keeps its own malloc settings.
    """
    mallopt = _glibc("mallopt")
    return mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1


def freeze_start_up() -> None:
    """Collect the garbage of the start-up, then leave every object alive now out of future collections.

    For a process that is a node and nothing else, once the node has started: what it holds then lives as
    long as the node, and a frozen object that did become cyclic garbage would never be collected.
    """
    gc.collect()
    gc.freeze()
