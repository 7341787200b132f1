"""Helpers for integration tests: real nodes on loopback in one trio run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshnode.config import NodeConfig

__all__ = ["INTERVAL", "node_config"]

# The presence interval of test nodes: stale after 3 s of silence, gone after 10 s. Every node in
# the test process publishes, verifies and forwards presence (five nodes at 0.2 s took a third of
# a core), and on a busy machine a node that falls behind times its peers out; a test about those
# timeouts sets its own interval.
INTERVAL = 1.0


def node_config(root: Path, name: str, **overrides: Any) -> NodeConfig:
    settings: dict[str, Any] = {
        "listen": ("/ip4/127.0.0.1/tcp/0",), "mdns": False, "api": None, "slots": 2, "presence_interval": INTERVAL,
    }  # fmt: skip
    settings.update(overrides)
    return NodeConfig(data_dir=root / name, **settings)
