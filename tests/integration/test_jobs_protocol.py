"""Two nodes over real libp2p: the owner runs one replica of each subtask, a thief steals the other,
and each subtask is accepted only when both distinct executors agree."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
import zstandard

from meshnode.config import TrustPolicy
from meshnode.core import wire
from meshnode.core.output_codec import PLAIN, ZSTD
from meshnode.core.job_messages import MAX_OUTPUT_BYTES, PushedResult, ResultPush
from meshnode.core.manifest import JobManifest, Replication, TaskLimits
from meshnode.core.manifest import JobOptions
from meshnode.core.reputation import Reputation
from meshnode.core.result import ResultClaim
from meshnode.net.blob_protocol import fetch_from_any, serve_blobs
from meshnode.net.host import MeshHost, open_host
from meshnode.net.job_protocol import JobClient, serve_jobs
from meshnode.node.executing import Executor
from meshnode.node.job_service import MeshJobService
from meshnode.node.owning import JobManager
from meshnode.node.stealing import Workers
from meshnode.sandbox.runtime import ENGINE_ID, Sandbox
from meshnode.storage.blobs import BlobStore
from meshnode.storage.identity import load_or_create_identity
from meshnode.storage.journal import Store
from tests.tasks import reference

from ..waiting import JOB

TASK = (Path(__file__).resolve().parents[2] / "tasks_wasm" / "monte_carlo_pi.wasm").read_bytes()
INPUTS = [json.dumps({"seed": i, "samples": 2000}).encode() for i in range(8)]
OPTIONS = JobOptions(limits=TaskLimits(10**9, 16 << 20, 10_000, 1 << 20), replication=Replication(2, 2, 2))


@dataclass
class Side:
    host: MeshHost
    manager: JobManager
    workers: Workers


@asynccontextmanager
async def side(root: Path, sandbox: Sandbox) -> AsyncIterator[Side]:
    identity = load_or_create_identity(root / "key")
    blobs = BlobStore(root / "blobs")
    with Store.open(root / "node.db") as store:
        executor = Executor(identity, sandbox, blobs, store, TrustPolicy())
        manager = JobManager(identity, blobs, store, executor, Reputation())
        async with open_host(identity, ["/ip4/127.0.0.1/tcp/0"]) as host, trio.open_nursery() as nursery:
            serve_blobs(host, blobs)
            workers = Workers(host, manager, 1, lambda: [], lambda idle: None)
            workers.attach(nursery)
            serve_jobs(host, MeshJobService(manager, workers, lambda thief, n: n, on_release=lambda: None))
            yield Side(host, manager, workers)
            nursery.cancel_scope.cancel()


async def thief_round(thief: Side, owner: Side, request_id: int, corrupt: bool = False) -> int:
    """Steal a batch, run it, push the results; how many replicas it ran."""
    reply = await JobClient(thief.host).steal(owner.host.peer_id, 4, request_id, ENGINE_ID)
    ran = 0
    for grant in reply.grants:
        manifest = wire.open_self_signed(grant.manifest, JobManifest, "owner")
        await fetch_from_any(thief.host, [owner.host.peer_id], manifest.module_sha256, thief.manager.blobs)
        pushed = []
        for subtask_bytes in grant.subtasks:
            checked_manifest, subtask = thief.manager.executor.check(grant.manifest, subtask_bytes, time.time_ns() // 10**6)
            result = await thief.manager.executor.run(checked_manifest, subtask)
            encoded, output = result.encoded, result.output
            if corrupt and output is not None:  # a byzantine executor: a wrong output, honestly hashed
                output = output[:-1] + bytes([output[-1] ^ 1])
                import hashlib

                encoded = wire.encode(dataclasses.replace(result.claim, output_sha256=hashlib.sha256(output).digest()))
            pushed.append(PushedResult(claim=encoded, output=output, codec=PLAIN))
            ran += 1
        ack = await JobClient(thief.host).push(owner.host.peer_id, ResultPush(results=tuple(pushed)))
        assert [a.status for a in ack.acks] == ["accepted"] * len(pushed), ack
    return ran


async def run_job(owner: Side, thief: Side, corrupt: bool = False) -> bytes:
    job = owner.manager.submit(TASK, INPUTS, OPTIONS, now_ms=time.time_ns() // 10**6)
    await thief.host.dial(owner.host.peer_id, owner.host.listen_addrs)
    request_id = 0
    with trio.fail_after(JOB):
        while not job.owner.finished:
            grant = await owner.manager.take(job, 2, time.monotonic())
            if grant is not None and grant.replicas:
                await owner.manager.run_grant(job, grant)
            request_id += 1
            await thief_round(thief, owner, request_id, corrupt)
    return job.job_id


async def test_each_subtask_is_verified_by_two_distinct_executors(tmp_path: Path) -> None:
    with Sandbox() as sandbox:
        async with side(tmp_path / "owner", sandbox) as owner, side(tmp_path / "thief", sandbox) as thief:
            job_id = await run_job(owner, thief)
            outputs = owner.manager.store.outputs(job_id)
            assert [o.output for o in outputs] == [reference.monte_carlo_pi(i) for i in INPUTS]
            for o in outputs:
                assert sorted(o.detail["executors"]) == sorted([str(owner.host.peer_id), str(thief.host.peer_id)])
            assert owner.manager.executor.runs == len(INPUTS) and thief.manager.executor.runs == len(INPUTS)
            assert owner.manager.reputation[thief.host.peer_id].agreements == len(INPUTS)


async def test_a_byzantine_thief_never_gets_an_output_accepted(tmp_path: Path) -> None:
    with Sandbox() as sandbox:
        async with side(tmp_path / "owner", sandbox) as owner, side(tmp_path / "thief", sandbox) as thief:
            job_id = await run_job(owner, thief, corrupt=True)
            outputs = owner.manager.store.outputs(job_id)
            assert all(o.status == "disputed" and o.output is None for o in outputs)  # 2 executors, no quorum


async def test_a_claim_pushed_for_someone_else_or_with_a_wrong_output_is_rejected(tmp_path: Path) -> None:
    """A claim is not signed: the owner takes it only from the peer it names, as the stream authenticated it."""
    with Sandbox() as sandbox:
        async with side(tmp_path / "owner", sandbox) as owner, side(tmp_path / "thief", sandbox) as thief:
            job = owner.manager.submit(TASK, INPUTS, OPTIONS, now_ms=time.time_ns() // 10**6)
            await thief.host.dial(owner.host.peer_id, owner.host.listen_addrs)
            other = load_or_create_identity(tmp_path / "other")
            claim = ResultClaim(job.job_id, 0, 0, other.peer_id, "ok", b"h" * 32, 1, 5, ENGINE_ID, "")
            ack = await JobClient(thief.host).push(owner.host.peer_id, ResultPush(results=(
                PushedResult(claim=wire.encode(claim), output=b"x", codec=PLAIN),
                PushedResult(claim=wire.encode(dataclasses.replace(claim, executor=thief.host.peer_id)), output=b"x", codec=PLAIN),
                PushedResult(claim=wire.sign(claim, other.signing_key), output=b"x", codec=PLAIN),  # as version 2 pushed it
            )))  # fmt: skip
            assert [(a.status, a.reason) for a in ack.acks] == [
                ("rejected", f"pushed by {thief.host.peer_id} but claimed by {other.peer_id}"),
                ("rejected", "the output does not match the claim's hash"),
            ]
            assert job.progress().verified == 0
            # outputs that do not unpack: garbage, a zstd bomb, a frame that does not say its size
            own = wire.encode(dataclasses.replace(claim, executor=thief.host.peer_id))
            bad = (b"not zstd", zstandard.ZstdCompressor().compress(bytes(MAX_OUTPUT_BYTES + 1)),
                   zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 100))  # fmt: skip
            ack = await JobClient(thief.host).push(owner.host.peer_id, ResultPush(
                results=tuple(PushedResult(claim=own, output=data, codec=ZSTD) for data in bad)))  # fmt: skip
            assert [a.status for a in ack.acks] == ["rejected"] * 3
            assert "not valid zstd" in ack.acks[0].reason and "says more than" in ack.acks[1].reason
            assert "does not say its size" in ack.acks[2].reason
            assert job.progress().verified == 0 and not job.owner.finished  # the owner serves on
