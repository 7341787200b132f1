"""Adaptive replication in the simulator: its cost on an honest mesh, and a trusted peer that turns bad.

The figures are the core's (``core/adaptive.py``): after warm-up a subtask costs
``1 + p`` runs with ``p`` at most ``1 / min_streak``; a cheater is caught by a
spot check or a quorum, and every result of the running job that it alone
vouched for is decided again by others.
"""

from __future__ import annotations

from meshnode.sim import Scenario, simulate

HONEST = Scenario(peers=20, subtasks=3000, verify="adaptive", task_errors=0.0)


def test_an_honest_mesh_runs_a_subtask_about_once_after_warm_up() -> None:
    adaptive = simulate(HONEST, 1)
    fixed = simulate(Scenario(peers=20, subtasks=3000, task_errors=0.0), 1)
    assert fixed.runs_per_verified >= 2.0
    # warm-up (every peer needs 10 quorums before it runs anything alone) included
    assert adaptive.runs_per_verified < 1.15
    assert adaptive.verified_by["single"] > 0.8 * adaptive.subtasks
    assert 0 < adaptive.verified_by["single+spotcheck"] < 0.1 * adaptive.subtasks
    assert adaptive.wrong_accepted == 0


def test_a_trusted_peer_that_turns_bad_is_caught_and_its_lone_results_decided_again() -> None:
    turncoat = Scenario(peers=10, subtasks=1500, verify="adaptive", min_streak=5, wrong_fraction=0.1, wrong_rate=0.3,
                        cheat_after=30.0)  # fmt: skip
    report = simulate(turncoat, 1)
    assert report.wrong_accepted > 0  # it lied alone and was believed for a while ...
    assert report.faults["reopened"] >= report.wrong_accepted  # ... then everything it alone vouched for ran again
    assert report.wrong_standing == 0
    honest_then = simulate(Scenario(peers=10, subtasks=1500, verify="adaptive", min_streak=5), 1)
    assert honest_then.faults["reopened"] == 0
