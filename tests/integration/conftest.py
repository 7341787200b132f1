"""Helpers for integration tests: real nodes on loopback in one trio run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from meshnode.config import NodeConfig

FAST = 0.2  # presence interval for tests: stale after 0.6 s, gone after 2 s


def node_config(root: Path, name: str, **overrides: Any) -> NodeConfig:
    settings: dict[str, Any] = {
        "listen": ("/ip4/127.0.0.1/tcp/0",), "mdns": False, "api": None, "slots": 2, "presence_interval": FAST,
    }  # fmt: skip
    settings.update(overrides)
    return NodeConfig(data_dir=root / name, **settings)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return the seconds it took. Fails the test after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await trio.sleep(0.02)
    return time.monotonic() - start
