"""How often a node publishes presence as the mesh grows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.presence import MAX_HEARTBEAT, heartbeat_interval


@given(st.floats(0.1, 60), st.integers(0, 10_000))
def test_the_heartbeat_grows_with_the_mesh_so_the_mesh_wide_rate_stays_flat(base: float, peers: int) -> None:
    interval = heartbeat_interval(base, peers)
    assert min(base, MAX_HEARTBEAT) <= interval <= MAX_HEARTBEAT
    assert heartbeat_interval(base, peers + 1) >= interval
    if interval < MAX_HEARTBEAT:  # heartbeats of the whole mesh (peers + 1 nodes): about 20 per base interval
        assert (peers + 1) / interval <= max(21 / base, (peers + 1) / base)
        assert peers / interval <= 20 / base + 1e-9 or interval == base


def test_the_default_heartbeat() -> None:
    assert heartbeat_interval(30.0, 5) == 30.0
    assert heartbeat_interval(30.0, 40) == 60.0
    assert heartbeat_interval(30.0, 49) == MAX_HEARTBEAT
