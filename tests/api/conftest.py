"""Fixtures for the local API tests: a fake node view, and real servers on real loopback sockets."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from meshnode.api.server import new_token, serve_api

from ..waiting import STEP

PEER_A = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
PEER_B = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


def sample_peer(**changes: Any) -> dict[str, Any]:
    """A peer dict shaped like the node's, with ``changes`` applied."""
    peer: dict[str, Any] = {
        "peer_id": PEER_B,
        "state": "alive",
        "addrs": ["/ip4/10.0.0.2/tcp/7350", "/ip4/192.168.1.7/tcp/7350"],
        "slots": 2,
        "idle": 1,
        "surplus": 0,
        "load1": 0.25,
        "mem_free": 3435973836,
        "mem_total": 8589934592,
        "cpu": "Intel(R) Xeon(R) CPU",
        "gpus": [],
        "version": "0.1.0",
        "engine": "wasmtime-50.0.1/x86_64",
        "rtt_ms": 0.7,
        "last_seen_s": 1.2,
        "connected": True,
        "gossip_heard_s": 0.8,
        "reputation": {"agreements": 7, "disagreements": 0, "failures": 1, "score": 0.8, "barred": False},
    }
    peer.update(changes)
    return peer


@dataclass
class FakeView:
    """Stands in for the node: fixed info, and a peer list the test can change."""

    peer_id: str = PEER_A
    peer_list: list[dict[str, Any]] = field(default_factory=lambda: [sample_peer()])

    def info(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "version": "0.1.0"}

    def peers(self) -> list[dict[str, Any]]:
        return list(self.peer_list)


@dataclass(frozen=True)
class RunningServer:
    url: str
    token: str
    view: FakeView

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def server(nursery: trio.Nursery) -> RunningServer:
    """A server on the test's own trio loop, for async clients; cancelled after the test."""
    view, token = FakeView(), new_token()
    url = await nursery.start(serve_api, view, "127.0.0.1:0", token)
    return RunningServer(url, token, view)


@contextmanager
def server_thread(view: FakeView, token: str | None = None, **serve: Any) -> Iterator[RunningServer]:
    """A server in a background thread with its own trio loop, for blocking clients and subprocesses;
    ``serve``: more of ``serve_api``'s arguments (``extra_routes``, ``sessions``)."""
    token = token or new_token()
    # the server thread reports (url, its loop's token, the scope that stops it), or why it failed
    started: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException] = queue.Queue()

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(functools.partial(serve_api, view, "127.0.0.1:0", token, **serve))
                started.put((url, trio.lowlevel.current_trio_token(), scope))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            started.put(exc)

    thread = threading.Thread(target=run, name="api-server", daemon=True)
    thread.start()
    item = started.get(timeout=STEP)
    if isinstance(item, BaseException):
        raise item
    url, trio_token, scope = item
    try:
        yield RunningServer(url, token, view)
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=trio_token)
        thread.join(timeout=STEP)
    assert not thread.is_alive(), "the API server did not stop"
    assert started.empty(), f"the API server failed: {started.get()!r}"
