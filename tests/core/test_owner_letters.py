"""``JobOwner.state_letters``: the dashboard's grid, one letter per subtask, from the owner's machine."""

from __future__ import annotations

import time

from meshnode.core.job import ClaimReceived, StealRequest

from .test_owner import BAD, EVIL, H1, H2, R, honest, make_claim, new_job


def test_each_subtask_reads_verified_failed_disputed_running_or_queued() -> None:
    job = new_job(replicas=2, quorum=2, max_replicas=2, n=6)
    assert job.state_letters() == "qqqqqq"
    job.handle(StealRequest(H1, 4, 1, 0.0))  # subtasks 0-3, one replica each
    job.handle(StealRequest(BAD, 3, 1, 0.0))  # the second replicas of 0-2
    for index in (0, 2):  # 0 verifies, 2 fails alike on both (truth: every third subtask traps)
        job.handle(ClaimReceived(honest(H1, R(index, 0)), 1.0))
        job.handle(ClaimReceived(honest(BAD, R(index, 1)), 1.0))
    job.handle(ClaimReceived(honest(H1, R(1, 0)), 1.0))
    job.handle(ClaimReceived(make_claim(BAD, R(1, 1), "ok", EVIL, 1), 1.0))  # no replica left: disputed
    assert job.state_letters() == "vdfrqq"
    job.handle(ClaimReceived(honest(H1, R(3, 0)), 2.0))
    assert job.state_letters()[3] == "q", "one replica reported, the other not yet handed out"
    job.handle(StealRequest(H2, 1, 1, 2.0))
    assert job.state_letters()[3] == "r"
    assert job.status(1) == "disputed" and job.status(2) == "failed"


def test_ten_thousand_subtasks_take_well_under_a_second() -> None:
    job = new_job(replicas=1, quorum=1, max_replicas=1, n=10_000)
    job.handle(StealRequest(H1, 500, 1, 0.0))
    start = time.perf_counter()
    letters = job.state_letters()
    assert len(letters) == 10_000 and letters.count("r") == 500
    assert time.perf_counter() - start < 0.5  # about a millisecond on an idle machine
