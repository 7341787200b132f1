"""Jobs this node owns: run on its own slots, journalled, resumed after a crash without recomputing."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.api.job_routes import _record
from meshnode.config import TrustPolicy
from meshnode.core.job import Grant, StealRequest, Tick
from meshnode.core.manifest import Replication, TaskLimits
from meshnode.core.manifest import JobOptions
from meshnode.core.outcome import TaskOutcome
from meshnode.core.output_codec import pack
from meshnode.core.reputation import Reputation
from meshnode.core.result import ResultClaim
from meshnode.node import owning
from meshnode.node.executing import Executor
from meshnode.node.owning import JobManager, JobResult
from meshnode.sandbox.runtime import ENGINE_ID, Sandbox
from meshnode.storage.blobs import BlobStore
from meshnode.storage.identity import load_or_create_identity
from meshnode.storage.journal import Store
from tests.tasks import reference

TASK = (Path(__file__).resolve().parents[2] / "tasks_wasm" / "monte_carlo_pi.wasm").read_bytes()
INPUTS = [json.dumps({"seed": i, "samples": 500}).encode() for i in range(10)]
ALONE = JobOptions(limits=TaskLimits(10**9, 16 << 20, 10_000, 1 << 20), replication=Replication(1, 1, 1))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


def manager(root: Path, sandbox: Sandbox, store: Store) -> JobManager:
    identity = load_or_create_identity(root / "node")
    blobs = BlobStore(root / "blobs")
    return JobManager(identity, blobs, store, Executor(identity, sandbox, blobs, store, TrustPolicy()), Reputation())


async def run_some(m: JobManager, job_id: bytes, batches: int) -> None:
    job = m.jobs[job_id]
    for _ in range(batches):
        grant = await m.take(job, 2, time.monotonic())
        if grant is None or not grant.replicas:
            return
        await m.run_grant(job, grant)


async def test_a_job_runs_on_the_owners_slots_and_every_output_is_journalled(tmp_path: Path, sandbox: Sandbox) -> None:
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        job = m.submit(TASK, INPUTS, ALONE, now_ms=int(time.time() * 1000))
        await run_some(m, job.job_id, batches=100)
        assert job.owner.finished
        outputs = store.outputs(job.job_id)
        assert [o.index for o in outputs] == list(range(len(INPUTS)))
        assert [o.output for o in outputs] == [reference.monte_carlo_pi(i) for i in INPUTS]
        assert store.jobs("finished")[0].job_id == job.job_id


async def test_what_an_own_chunks_time_budget_did_not_reach_goes_back_to_the_job(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(owning, "CHUNK_BUDGET", 0.0)  # every chunk stops after its first run
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        job = m.submit(TASK, INPUTS, ALONE, now_ms=int(time.time() * 1000))
        grant = await m.take(job, 4, time.monotonic())
        assert grant is not None and len(grant.replicas) == 4
        results = await m.run_own(job, grant)
        assert [r.claim.index for r in results] == [grant.replicas[0].index]
        assert job.owner.surplus() == len(INPUTS) - 1  # the other three can be taken again, here or by a thief
        await m.feed_own(job, results)
        await run_some(m, job.job_id, batches=100)
        assert job.owner.finished
        assert [o.output for o in store.outputs(job.job_id)] == [reference.monte_carlo_pi(i) for i in INPUTS]


async def test_a_restarted_owner_resumes_and_recomputes_nothing_verified(tmp_path: Path, sandbox: Sandbox) -> None:
    with Store.open(tmp_path / "node.db") as store:
        first = manager(tmp_path, sandbox, store)
        job_id = first.submit(TASK, INPUTS, ALONE, now_ms=int(time.time() * 1000)).job_id
        await run_some(first, job_id, batches=2)  # 4 of 10 done, then the process "dies"
        done_before = {o.index for o in store.outputs(job_id)}
        assert len(done_before) == 4
    with Store.open(tmp_path / "node.db") as store:
        second = manager(tmp_path, sandbox, store)
        (resumed,) = second.resume()
        assert resumed.job_id == job_id
        assert {o.index for o in store.outputs(job_id)} == done_before  # nothing journalled was lost
        await run_some(second, job_id, batches=100)
        assert resumed.owner.finished
        # verdicts newer than the last snapshot are taken from the journal: nothing verified re-runs
        assert second.executor.runs == len(INPUTS) - 4
        assert [o.output for o in store.outputs(job_id)] == [reference.monte_carlo_pi(i) for i in INPUTS]


async def test_a_job_that_needs_more_executors_than_the_node_waits_for_peers(tmp_path: Path, sandbox: Sandbox) -> None:
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        options = JobOptions(limits=ALONE.limits, replication=Replication(2, 2, 5))
        job = m.submit(TASK, INPUTS[:3], options, now_ms=int(time.time() * 1000))
        await run_some(m, job.job_id, batches=100)
        progress = job.progress()
        assert not job.owner.finished and progress.verified == 0
        assert progress.queued == 3  # the second replica of each subtask waits for another node
        assert m.executor.runs == 3  # this node ran one replica of each, never two


async def test_replicas_that_lapse_together_cost_their_holder_one_failure(tmp_path: Path, sandbox: Sandbox) -> None:
    """One missed deadline is one failure, however many replicas the grant held: a thief whose first grant of four
    lapsed used to be a poor peer at once (score 1/6), served last for the rest of the job."""
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        job = m.submit(TASK, INPUTS, ALONE, now_ms=int(time.time() * 1000))
        thief = load_or_create_identity(tmp_path / "thief").peer_id
        now = time.monotonic()
        (grant,) = (await m.drive(job, StealRequest(thief, 4, 1, now))).grants
        assert len(grant.replicas) == 4
        await m.drive(job, Tick(now + job.owner.lease_seconds + 1))
        assert job.stats.lost == 4 and m.reputation[thief].failures == 1
        assert m.reputation.score(thief) == 1 / 3  # not poor (POOR_SCORE 0.25): still handed work


async def test_a_disputed_subtask_lists_each_candidate_and_who_reported_it(tmp_path: Path, sandbox: Sandbox) -> None:
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        options = JobOptions(limits=ALONE.limits, replication=Replication(2, 2, 2))
        job = m.submit(TASK, INPUTS[:1], options, now_ms=int(time.time() * 1000))
        a, b = (load_or_create_identity(tmp_path / name).peer_id for name in ("a", "b"))
        for peer, output in ((a, b"one"), (b, b"two")):  # each peer is granted a replica and reports its own output
            (grant,) = job.owner.handle(StealRequest(peer, 1, 1, time.monotonic()))
            assert isinstance(grant, Grant)
            (ref,) = grant.replicas
            claim = ResultClaim.of(job.job_id, 0, ref.replica, peer, TaskOutcome(output, None, 100, 0.0), ENGINE_ID)
            await m.receive_claims(job, [(claim, pack(output))])
        (saved,) = store.outputs(job.job_id)
        assert saved.status == "disputed" and saved.output is None
        result = JobResult.of(saved)
        assert dict(result.candidates) == {
            hashlib.sha256(b"one").hexdigest(): (str(a),), hashlib.sha256(b"two").hexdigest(): (str(b),)
        }
        record = _record(saved)
        assert record["status"] == "disputed" and record["error"]["code"] == "disputed"
        assert {c["sha256"]: c["executors"] for c in record["candidates"]} == {k: list(v) for k, v in result.candidates}


async def test_a_task_error_its_peers_agree_on_is_failed_with_the_tasks_own_message(tmp_path: Path, sandbox: Sandbox) -> None:
    # The owner runs no replica here: the message shown is the one in the claims, which the quorum compared.
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        options = JobOptions(limits=ALONE.limits, replication=Replication(2, 2, 2))
        job = m.submit(TASK, INPUTS[:1], options, now_ms=int(time.time() * 1000))
        refused = TaskOutcome.failed("task_error", "seed must be an integer", fuel_used=42)
        for name in ("a", "b"):
            peer = load_or_create_identity(tmp_path / name).peer_id
            (grant,) = job.owner.handle(StealRequest(peer, 1, 1, time.monotonic()))
            assert isinstance(grant, Grant)
            (ref,) = grant.replicas
            await m.receive_claims(job, [(ResultClaim.of(job.job_id, 0, ref.replica, peer, refused, ENGINE_ID), None)])
        (saved,) = store.outputs(job.job_id)
        assert saved.status == "task_error" and saved.output is None
        assert JobResult.of(saved).message == "seed must be an integer"
        assert job.owner.finished and job.progress().failed == 1 and job.progress().verified == 0
        assert _record(saved)["error"] == {"code": "task_error", "message": "seed must be an integer"}
