"""Freed memory goes back to the system, where the C library allows it; the start-up is frozen out of the GC."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from meshnode.node.memory import freeze_start_up, limit_malloc_arenas, trim_free_memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and mallopt")


@glibc
def test_a_trim_returns_freed_pages_to_the_system() -> None:
    """Memory freed in a worker thread's arena is handed back by a trim (a child process: a clean heap)."""
    code = """
import threading, psutil
from meshnode.node.memory import trim_free_memory
held = []
def churn():  # small blocks, freed except every 64th: pages glibc keeps unless trimmed
    blocks = [bytearray(1000) for _ in range(200_000)]
    held.extend(blocks[::64])
t = threading.Thread(target=churn); t.start(); t.join()
before = psutil.Process().memory_info().rss
assert trim_free_memory()
print((before - psutil.Process().memory_info().rss) >> 20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout) >= 50, out.stdout  # about 190 MiB freed by the thread; most of it comes back


@glibc
def test_the_arena_limit_is_taken() -> None:
    code = "from meshnode.node.memory import limit_malloc_arenas as f; print(f(2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True"


def test_both_are_harmless_to_call_again() -> None:
    assert trim_free_memory() == trim_free_memory()
    assert limit_malloc_arenas(8) == limit_malloc_arenas(8)


def test_freezing_the_start_up_collects_its_garbage_and_hides_the_rest_from_later_collections() -> None:
    code = """
import gc, weakref
from meshnode.node.memory import freeze_start_up
class Node: pass
kept = [Node() for _ in range(100_000)]  # what a started node holds
cycle = Node(); cycle.me = cycle; dead = weakref.ref(cycle); del cycle  # garbage of the start-up
freeze_start_up()
print(dead() is None, gc.get_freeze_count() >= 100_000)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "True"]
