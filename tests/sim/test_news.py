"""Work that comes back is news: a thief told "nothing left for you" hears of replicas whose lease lapsed.

Three replicas of each of 154 subtasks on 25 peers of one slot, a lazy peer among them: its leases lapse
30 s into the job, when thieves have been told there is nothing left for them, and they come back only
when they hear a newer presence. The node publishes one when a tick sees its surplus grow (at most every
``GROWTH_NEWS_GAP``) or cross zero; the owner's next heartbeat is 144 s away on this mesh.
"""

from __future__ import annotations

import pytest

from meshnode.sim import Scenario, simulate

TAIL = Scenario(peers=25, slots=1, subtasks=77, jobs=2, verify="adaptive", replicas=3, quorum=3, max_replicas=3,
                spot_floor=0.2, run_seconds=0.2, lazy_fraction=0.05)  # fmt: skip


@pytest.mark.parametrize("seed", [9, 32])
def test_replicas_that_come_back_are_taken_without_waiting_for_a_heartbeat(seed: int) -> None:
    # without the growth news these took 182 s and 173 s
    assert simulate(TAIL, seed).simulated_seconds < 60


@pytest.mark.xfail(strict=True, reason="work that comes back unseen by a tick (a dip to nothing and back between "
                   "two ticks; growth within GROWTH_NEWS_GAP of the last news) is never told to the thieves told "
                   "nothing is left; meshnode/sim/presence.py mirrors MeshNode._tick")  # fmt: skip
@pytest.mark.parametrize("seed", [5, 22])
def test_work_that_comes_back_between_ticks_is_told_too(seed: int) -> None:
    assert simulate(TAIL, seed).simulated_seconds < 60  # 197 s and 190 s: they wait for the heartbeat
