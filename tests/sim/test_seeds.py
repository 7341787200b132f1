"""The simulator's invariants over many seeds of small, mixed scenarios (``meshnode.sim.mixed``).

Each seed draws its own mesh: 10 to 50 peers, a few hundred subtasks, fixed or
adaptive verification, crashes of peers and owners (torn commits among them), a
partition, lost and reordered messages, and byzantine peers of every kind. A
broken invariant fails with the seed, the command that replays it and the last
events. The faults must really have happened, or the seeds prove little.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from meshnode.sim import Report, mixed, simulate

SEEDS = range(200)


def simulated(seed: int) -> Report:
    return simulate(mixed(seed), seed)  # raises AssertionError when an invariant breaks


def test_every_invariant_holds_over_200_seeds() -> None:
    seen: Counter[str] = Counter()
    reports: list[Report] = []
    # each seed is independent and pure Python: one process per core (spawned, not forked from a test process)
    workers = max(1, min(4, len(os.sched_getaffinity(0))))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(simulated, SEEDS, chunksize=5))
    for report in done:
        assert report.invariants_held
        assert sum(report.verdicts.values()) + report.undecided == report.subtasks
        reports.append(report)
        for name, count in report.faults.items():
            seen[name] += count > 0
        seen["lost messages"] += report.lost_messages > 0
        seen["adaptive"] += report.verify == "adaptive"
        seen["accepted alone"] += report.verified_by.get("single", 0) > 0
        seen["disputed"] += report.verdicts.get("disputed", 0) > 0
        seen["failed for lost attempts"] += report.verdicts.get("lease_lapsed", 0) + report.verdicts.get("peer_gone", 0) > 0
        seen["cancelled"] += report.undecided > 0
        seen["wrong accepted"] += report.wrong_accepted > 0
    # every kind of fault and outcome happened in some seeds (their number is fixed by the seeds)
    for what in ("crashes", "owner restores", "torn commits", "partitions", "lost replicas", "spot checks",
                 "replicas added on disagreement", "reopened", "lost messages", "adaptive", "accepted alone",
                 "disputed", "failed for lost attempts", "cancelled", "wrong accepted"):  # fmt: skip
        assert seen[what] >= 3, (what, seen)
