"""How work is scheduled across owners: work-conserving, and replicas of a subtask run close together."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from meshnode.core.manifest import Replication, TaskLimits
from meshnode.core.manifest import JobOptions
from tests.sandbox import modules as m

from ..waiting import wait_until
from .test_mesh_jobs import TASKS, start_mesh

LIMITS = TaskLimits(10**9, 16 << 20, 30_000, 1 << 20)


async def test_a_job_that_can_never_run_here_does_not_stop_its_owner_running_other_owners_work(tmp_path: Path) -> None:
    """Quorum 3 on a two-node mesh waits for a third node; meanwhile the other node's jobs run on both."""
    module = (TASKS / "monte_carlo_pi.wasm").read_bytes()
    inputs = [json.dumps({"seed": i, "samples": 20_000}).encode() for i in range(40)]
    async with AsyncExitStack() as stack:
        a, b = await start_mesh(stack, tmp_path, 2)
        impossible = await a.submit(module, inputs[:20], JobOptions(LIMITS, Replication(2, 3, 5)))
        # both nodes take a replica of each subtask; the third replicas wait for a node that is not there
        await wait_until(lambda: impossible.progress().queued == 20, 30, "both nodes to take a replica of each")
        for _ in range(2):  # and again once b has seen that a has nothing for it
            job = await b.submit(module, inputs, JobOptions(LIMITS, Replication(2, 2, 2)))
            with trio.fail_after(90):
                results = await job.wait()
            assert [r.status for r in results] == ["ok"] * len(inputs)
            assert all(set(r.executors) == {str(a.peer_id), str(b.peer_id)} for r in results)
        p = impossible.progress()
        assert (p.verified, p.queued) == (0, 20) and not impossible.done  # still waiting for a third node


async def test_a_large_job_decides_from_the_first_seconds_and_at_a_steady_rate(tmp_path: Path) -> None:
    """10,000 short subtasks, two replicas each on two nodes: verdicts arrive all through the job, not in a burst."""
    n = 10_000
    async with AsyncExitStack() as stack:
        owner, _ = await start_mesh(stack, tmp_path, 2)
        started = time.monotonic()
        job = await owner.submit(m.ECHO, (b"%d" % i for i in range(n)), JobOptions(LIMITS, Replication(2, 2, 2)))
        samples: list[tuple[float, int]] = []
        with trio.fail_after(300):
            while not job.done:
                p = job.progress()
                samples.append((time.monotonic() - started, p.verified + p.failed + p.disputed))
                await trio.sleep(0.1)
        total = time.monotonic() - started
        first = next(t for t, decided in samples if decided > 0)
        at_half = max((decided for t, decided in samples if t <= total / 2), default=0)
        tenths = [max((d for t, d in samples if t <= total * (k + 1) / 10), default=0) for k in range(10)]
        print(f"\n[scheduling] {n} subtasks x2 in {total:.1f} s; first verdict at {first:.2f} s; {at_half} decided at "
              f"half time; decided by each tenth: {tenths}")  # fmt: skip
        assert first < total / 10, f"the first verdict came at {first:.1f} s of {total:.1f} s"
        # the decided count grows all through the job: every fifth of its time decides a share of it
        # (on a machine this busy the rate itself can vary: 22% decided at half time has been seen)
        fifths = [0, *(tenths[k] for k in (1, 3, 5, 7, 9))]
        for k in range(5):
            assert fifths[k + 1] - fifths[k] >= n / 20, f"{fifths[k + 1] - fifths[k]} verdicts in fifth {k + 1}"
        # and no tenth of the job's time saw more than a third of its verdicts: no burst at the end
        for k in range(10):
            lo = tenths[k - 1] if k else 0
            assert tenths[k] - lo <= n / 3, f"{tenths[k] - lo} verdicts in tenth {k + 1} of the job"
        outputs = owner.jobs.store.outputs(job.job_id)
        assert [o.output for o in outputs] == [b"%d" % i for i in range(n)]
