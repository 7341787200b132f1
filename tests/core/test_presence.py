"""How often a node publishes presence as the mesh grows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.presence import MAX_HEARTBEAT, MESH_HEARTBEATS, heartbeat_interval


@given(st.floats(0.1, 60), st.integers(0, 10_000))
def test_the_heartbeat_grows_with_the_mesh_so_the_mesh_wide_rate_stays_flat(base: float, peers: int) -> None:
    interval = heartbeat_interval(base, peers)
    assert base <= interval <= MAX_HEARTBEAT
    assert heartbeat_interval(base, peers + 1) >= interval
    if interval < MAX_HEARTBEAT:  # the whole mesh (peers + 1 nodes) publishes a bounded number per base interval
        assert (peers + 1) * base / interval <= MESH_HEARTBEATS + 1 + 1e-9


def test_the_default_heartbeat() -> None:
    assert heartbeat_interval(30.0, 5) == 30.0
    assert heartbeat_interval(30.0, 19) == 114.0
    assert heartbeat_interval(30.0, 49) == 294.0
    assert heartbeat_interval(30.0, 500) == MAX_HEARTBEAT
