"""Bad work and bad results from a peer: refused with a reason, nothing run or accepted, the node keeps going.

The owner node ``a`` plays the attacker: its job protocol hands out forged work
(a manifest with a broken signature, subtasks whose inputs were swapped, a
module whose bytes do not match the hash its manifest names). The thief ``b`` is
an honest node; ``a``'s job needs two distinct executors, so ``b`` must try.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import meshnode.net.blob_protocol as blob_protocol
import meshnode.node.job_service as job_service
import meshnode.node.stealing as stealing
from meshnode.core import wire
from meshnode.core.output_codec import PLAIN
from meshnode.core.job_messages import PushedResult, ResultPush
from meshnode.core.manifest import Subtask
from meshnode.node.mesh_node import MeshNode, open_node

from ..waiting import JOB, MEET, STEP, wait_until
from .conftest import node_config
from .test_jobs_protocol import INPUTS, OPTIONS, TASK, side, thief_round


@asynccontextmanager
async def owner_and_thief(root: Path) -> AsyncIterator[tuple[MeshNode, MeshNode]]:
    async with open_node(node_config(root, "a", slots=1)) as a:
        async with open_node(node_config(root, "b", slots=1, bootstrap=tuple(a.dial_addrs))) as b:
            await wait_until(lambda: len(a.table.alive()) == 1 and len(b.table.alive()) == 1, MEET, "the nodes to meet")
            yield a, b


async def assert_still_serving(a: MeshNode, b: MeshNode) -> None:
    """``b`` ran nothing of the forged work and still works: a fresh, honest job of its own completes."""
    assert b.jobs.executor.runs == 0 and b.jobs.executor.cache_hits == 0
    assert b.jobs.store.outbox_size() == 0
    job = await b.submit(TASK, INPUTS[:2], replicas=1, quorum=1)
    with trio.fail_after(JOB):
        assert [r.status for r in await job.wait()] == ["ok", "ok"]
    assert b.peer_id in {r.peer for r in a.table.alive()}


async def test_a_manifest_with_a_broken_signature_is_dropped(tmp_path: Path) -> None:
    async with owner_and_thief(tmp_path) as (a, b):
        job = await a.submit(TASK, INPUTS, OPTIONS)
        envelope = bytearray(job.envelope)
        envelope[-1] ^= 1  # the last byte belongs to the signature
        job.envelope = bytes(envelope)
        await wait_until(lambda: b.dropped["bad_grant"] > 0, STEP, "b to drop the forged grant")
        await job.cancel()
        await assert_still_serving(a, b)


async def test_subtasks_whose_inputs_were_swapped_are_refused_and_the_owner_hears_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = job_service._subtasks

    def forged(manager, job, refs):  # type: ignore[no-untyped-def]
        out = []
        for data in honest(manager, job, refs):
            s = wire.decode(data, Subtask)
            out.append(wire.encode(dataclasses.replace(s, input=b"{}", input_size=2)))
        return out

    monkeypatch.setattr(job_service, "_subtasks", forged)
    async with owner_and_thief(tmp_path) as (a, b):
        job = await a.submit(TASK, INPUTS, OPTIONS)
        await wait_until(lambda: str(b.peer_id) in job.refusals, STEP, "the refusal to reach the owner")
        assert "input does not match its SHA-256" in job.refusals[str(b.peer_id)]
        await job.cancel()
        monkeypatch.setattr(job_service, "_subtasks", honest)
        await assert_still_serving(a, b)


@pytest.mark.waits
async def test_a_module_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    async with owner_and_thief(tmp_path) as (a, b):
        job = await a.submit(TASK, INPUTS, OPTIONS)
        real_get = a.jobs.blobs.get
        # the owner's blob server now answers for the module's hash with other bytes
        a.jobs.blobs.get = lambda sha: b"\0asm" + bytes(100) if sha == job.manifest.module_sha256 else real_get(sha)  # type: ignore[method-assign]
        await wait_until(lambda: str(b.peer_id) in job.refusals, STEP, "the refusal to reach the owner")
        assert "cannot fetch the module" in job.refusals[str(b.peer_id)]
        assert b.dropped["bad_inline_module"] == 1  # the copy in its first grant was checked too, and dropped
        assert not b.jobs.blobs.has(job.manifest.module_sha256)
        await job.cancel()
        await assert_still_serving(a, b)


@pytest.mark.waits
async def test_a_module_its_owner_is_too_busy_to_serve_at_first_is_fetched_in_a_later_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unanswered = 2
    honest = blob_protocol._serve_one

    async def busy_at_first(store, stats, refusals, remote, stream):  # type: ignore[no-untyped-def]
        nonlocal unanswered
        if unanswered:  # the stream closes unanswered, as when 49 thieves ask one owner at once
            unanswered -= 1
            return
        await honest(store, stats, refusals, remote, stream)

    monkeypatch.setattr(blob_protocol, "_serve_one", busy_at_first)
    monkeypatch.setattr(job_service, "INLINE_MODULE_MAX", 0)  # a module too large to ride in a grant
    async with owner_and_thief(tmp_path) as (a, b):
        job = await a.submit(TASK, INPUTS, OPTIONS)  # replicas 2 on 2 nodes: b must run every subtask
        await wait_until(lambda: job.owner.finished or job.refusals, JOB, "the job to end, or b to refuse it")
        assert not job.refusals and unanswered == 0
        assert [r.status for r in await job.wait()] == ["ok"] * len(INPUTS)
        assert b.jobs.blobs.has(job.manifest.module_sha256)


async def test_a_small_module_rides_in_the_thiefs_first_grant_and_is_never_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[bytes] = []
    inlined: list[int] = []
    honest_fetch, honest_inline = stealing.fetch_from_any, job_service.MeshJobService._inline_module

    async def fetch(host, peers, sha256, store):  # type: ignore[no-untyped-def]
        fetched.append(sha256)
        return await honest_fetch(host, peers, sha256, store)

    def inline(service, job, thief):  # type: ignore[no-untyped-def]
        module: bytes = honest_inline(service, job, thief)
        inlined.append(len(module))
        return module

    monkeypatch.setattr(stealing, "fetch_from_any", fetch)
    monkeypatch.setattr(job_service.MeshJobService, "_inline_module", inline)
    async with owner_and_thief(tmp_path) as (a, b):
        job = await a.submit(TASK, INPUTS, OPTIONS)  # replicas 2 on 2 nodes: b must run every subtask
        with trio.fail_after(JOB):
            assert [r.status for r in await job.wait()] == ["ok"] * len(INPUTS)
    assert fetched == [] and b.jobs.blobs.has(job.manifest.module_sha256)
    assert inlined[0] == len(TASK) and set(inlined[1:]) <= {0}  # the first grant only
    assert job.module_sent == {b.peer_id}


async def test_a_replayed_result_is_acknowledged_but_never_counted_twice(tmp_path: Path) -> None:
    from meshnode.net.job_protocol import JobClient

    from meshnode.sandbox.runtime import Sandbox

    with Sandbox(slots=1) as sandbox:
        async with side(tmp_path / "o", sandbox) as owner, side(tmp_path / "t", sandbox) as thief:
            job = owner.manager.submit(TASK, INPUTS, OPTIONS, now_ms=time.time_ns() // 10**6)
            await thief.host.dial(owner.host.peer_id, owner.host.listen_addrs)
            assert await thief_round(thief, owner, 1) > 0
            before = job.progress()
            replays = []
            for entry in thief.manager.store.outbox_due(time.time() + 60):
                replays.append(PushedResult(claim=entry.claim, output=entry.output, codec=PLAIN))
            assert replays, "thief_round leaves its pushed results in its outbox"
            ack = await JobClient(thief.host).push(owner.host.peer_id, ResultPush(results=tuple(replays)))
            assert {a.status for a in ack.acks} <= {"duplicate", "late"}
            assert job.progress() == before
