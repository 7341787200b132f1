"""The executor: every check before anything runs, then real wasmtime, real SQLite, real blobs."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.config import TrustPolicy
from meshnode.core import wire
from meshnode.core.manifest import InputCommitment, JobManifest, Replication, TaskLimits
from meshnode.core.result import ResultClaim
from meshnode.errors import RefusedWork
from meshnode.node import executing
from meshnode.node.executing import Executor
from meshnode.sandbox.runtime import ENGINE_ID, Sandbox
from meshnode.storage.blobs import BlobStore
from meshnode.storage.identity import Identity, load_or_create_identity
from meshnode.storage.journal import Store
from tests.tasks import reference

TASK = (Path(__file__).resolve().parents[2] / "tasks_wasm" / "monte_carlo_pi.wasm").read_bytes()
INPUTS = [json.dumps({"seed": i, "samples": 1000}).encode() for i in range(4)]
NOW_MS = 1_000_000


@pytest.fixture
def owner(tmp_path: Path) -> Identity:
    return load_or_create_identity(tmp_path / "owner")


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Executor]:
    blobs = BlobStore(tmp_path / "blobs")
    blobs.put(TASK)
    with Sandbox() as sandbox, Store.open(tmp_path / "node.db") as store:
        yield Executor(load_or_create_identity(tmp_path / "me"), sandbox, blobs, store, TrustPolicy())


def job(owner: Identity, **changes: object) -> tuple[JobManifest, bytes, InputCommitment]:
    import hashlib

    commitment = InputCommitment.of(INPUTS)
    manifest = JobManifest(
        job_id=b"J" * 16, owner=owner.peer_id, label="pi", module_sha256=hashlib.sha256(TASK).digest(),
        module_size=len(TASK), entry="run", runtime="wasm", rows=0, rows_per_subtask=0, limits=TaskLimits(10**9, 16 << 20, 10_000, 1 << 20),
        nan_canonical=False, replication=Replication(2, 2, 5), subtask_count=len(INPUTS),
        inputs_root=commitment.root, created_ms=0, expires_ms=2 * NOW_MS,
    )  # fmt: skip
    manifest = dataclasses.replace(manifest, **changes)  # type: ignore[arg-type]
    return manifest, wire.sign(manifest, owner.signing_key), commitment


async def test_runs_claims_journals_and_answers_repeats_from_the_cache(executor: Executor, owner: Identity) -> None:
    manifest, envelope, commitment = job(owner)
    subtask = wire.encode(commitment.subtask(manifest.job_id, 2, 1, INPUTS[2]))
    checked_manifest, checked_subtask = executor.check(envelope, subtask, NOW_MS)
    result = await executor.run(checked_manifest, checked_subtask)
    assert result.output == reference.monte_carlo_pi(INPUTS[2])
    claim = wire.decode(result.encoded, ResultClaim)  # as it is pushed
    assert claim == result.claim and claim.executor == executor.identity.peer_id
    assert (claim.index, claim.replica, claim.status, claim.fuel_used > 0) == (2, 1, "ok", True)
    (entry,) = executor.store.outbox_due(now=time.time() + 60)
    assert (entry.index, entry.replica, entry.claim, entry.output) == (2, 1, result.encoded, result.output)

    again = await executor.run(checked_manifest, checked_subtask)
    assert again.cached and again.output == result.output and again.claim.fuel_used == claim.fuel_used
    assert (executor.runs, executor.cache_hits) == (1, 1)


async def test_the_result_cache_stays_within_its_bound_and_keeps_what_is_still_to_be_pushed(
    executor: Executor, owner: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executing, "CACHE_TRIM_EVERY", 1)  # look at the cache's size after every write
    manifest, envelope, commitment = job(owner)
    subtasks = [executor.check(envelope, wire.encode(commitment.subtask(manifest.job_id, i, 0, data)), NOW_MS)[1]
                for i, data in enumerate(INPUTS)]  # fmt: skip
    executor.cache_bytes = 1  # room for nothing: every entry goes unless the outbox names it
    await executor.run_batch(manifest, subtasks[:2], outbox=False)
    assert executor.store.cache_get_many(manifest.module_sha256, [s.input_sha256 for s in subtasks], ENGINE_ID) == {}
    await executor.run_batch(manifest, subtasks[2:])  # these wait in the outbox for their owner
    kept = executor.store.cache_get_many(manifest.module_sha256, [s.input_sha256 for s in subtasks], ENGINE_ID)
    assert sorted(kept) == sorted(s.input_sha256 for s in subtasks[2:])
    assert [e.output for e in executor.store.outbox_due(now=time.time() + 60)] == [reference.monte_carlo_pi(d) for d in INPUTS[2:]]


async def test_a_batchs_time_budget_leaves_out_what_it_did_not_reach(executor: Executor, owner: Identity) -> None:
    manifest, envelope, commitment = job(owner)
    subtasks = [executor.check(envelope, wire.encode(commitment.subtask(manifest.job_id, i, 0, data)), NOW_MS)[1]
                for i, data in enumerate(INPUTS)]  # fmt: skip
    await executor.run_batch(manifest, subtasks[1:2])  # a cache hit is answered whatever the budget
    results = await executor.run_batch(manifest, subtasks, budget=0.0)  # spent by the first run
    assert [(r.claim.index, r.cached) for r in results] == [(0, False), (1, True)]
    assert [r.output for r in results] == [reference.monte_carlo_pi(d) for d in INPUTS[:2]]
    due = executor.store.outbox_due(now=time.time() + 60)
    assert sorted(e.index for e in due) == [0, 1]  # nothing of 2 and 3, which never ran


def test_refuses_before_running_anything(executor: Executor, owner: Identity, tmp_path: Path) -> None:
    manifest, envelope, commitment = job(owner)
    good = wire.encode(commitment.subtask(manifest.job_id, 0, 0, INPUTS[0]))
    stranger = load_or_create_identity(tmp_path / "stranger")
    cases = {
        "bad signature": (wire.sign(dataclasses.replace(manifest, label="forged"), stranger.signing_key), good),
        "proof does not match": (envelope, wire.encode(dataclasses.replace(commitment.subtask(manifest.job_id, 0, 0, INPUTS[0]), index=1))),
        "does not match its SHA-256": (envelope, wire.encode(dataclasses.replace(commitment.subtask(manifest.job_id, 0, 0, INPUTS[0]), input=INPUTS[1][: len(INPUTS[0])]))),
        "expired": (job(owner, expires_ms=NOW_MS)[1], good),
        "module is not here": (job(owner, module_sha256=b"x" * 32)[1], good),
        "input is not here": (envelope, wire.encode(commitment.subtask(manifest.job_id, 3, 0, None))),
        "invalid work": (b"\x00garbage", good),
    }
    for reason, (manifest_bytes, subtask_bytes) in cases.items():
        with pytest.raises(RefusedWork, match=reason):
            executor.check(manifest_bytes, subtask_bytes, NOW_MS)
    executor.trust = TrustPolicy(frozenset({stranger.peer_id}))
    with pytest.raises(RefusedWork, match="does not run jobs for"):
        executor.check(envelope, good, NOW_MS)
    assert executor.runs == 0 and executor.store.outbox_size() == 0


def test_trust_file(tmp_path: Path, owner: Identity) -> None:
    f = tmp_path / "trusted"
    f.write_text(f"# owners we run for\n{owner.peer_id}\n\n")
    assert TrustPolicy.from_flag(str(f)).trusts(owner.peer_id)
    assert TrustPolicy.from_flag("any").trusts(owner.peer_id)
    f.write_text("not-a-peer-id\n")
    from meshnode.errors import ConfigError

    with pytest.raises(ConfigError, match="line 1"):
        TrustPolicy.from_flag(str(f))
