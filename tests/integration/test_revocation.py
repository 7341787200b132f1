"""Revocations reach the thieves: a decided subtask's extra replica, and a cancelled job, stop where they run."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from meshnode.core.job import ReplicaRef
from meshnode.core.manifest import Replication, TaskLimits
from meshnode.core.manifest import JobOptions
from meshnode.node.mesh_node import MeshNode

from ..waiting import wait_until
from .test_mesh_jobs import TASKS, start_mesh

LIMITS = TaskLimits(10**12, 64 << 20, 60_000, 1 << 20)


def tiles(count: int, max_iter: int) -> list[bytes]:
    """``count`` different mandelbrot tiles (about 0.15 s each at 30,000 iterations, 0.3 s at 60,000)."""
    return [
        json.dumps({"x0": 0, "y0": 0, "w": 96, "h": 96, "width": 96, "height": 96, "max_iter": max_iter + i}).encode()
        for i in range(count)
    ]  # fmt: skip


class Watch:
    """When each thief heard each revocation, and when it pushed each result (the real calls, recorded)."""

    def __init__(self) -> None:
        self.revoked: dict[tuple[str, ReplicaRef], float] = {}
        self.pushed: dict[tuple[str, ReplicaRef], float] = {}

    def attach(self, node: MeshNode) -> None:
        workers = node._workers
        assert workers is not None
        name = str(node.peer_id)
        revoked: Callable[..., Awaitable[None]] = workers.revoked
        push: Callable[..., Awaitable[Any]] = workers.client.push

        async def on_revoked(owner: Any, job_id: bytes, replicas: tuple[ReplicaRef, ...], reason: str) -> None:
            for ref in replicas:
                self.revoked.setdefault((name, ref), time.monotonic())
            await revoked(owner, job_id, replicas, reason)

        async def on_push(owner: Any, message: Any) -> Any:
            from meshnode.core import wire
            from meshnode.core.result import ResultClaim

            for r in message.results:
                claim = wire.decode(r.claim, ResultClaim)
                self.pushed[(name, ReplicaRef(claim.index, claim.replica))] = time.monotonic()
            return await push(owner, message)

        workers.revoked = on_revoked  # type: ignore[method-assign]
        workers.client.push = on_push  # type: ignore[method-assign]

    def pushed_after_revocation(self) -> list[tuple[str, ReplicaRef]]:
        return [key for key, at in self.pushed.items() if key in self.revoked and at > self.revoked[key]]


async def test_a_replica_still_running_when_its_subtask_is_decided_is_revoked_and_never_sent(tmp_path: Path) -> None:
    """Three replicas, quorum two: once two agree, the third, still running on a slow thief, is stopped there."""
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    async with AsyncExitStack() as stack:
        owner, fast, slow = await start_mesh(stack, tmp_path, 3)
        watch = Watch()
        for node in (fast, slow):
            watch.attach(node)
        executor = slow.jobs.executor
        run_batch = executor.run_batch

        async def late_run_batch(*args: Any, **kwargs: Any) -> Any:  # the slow thief takes 3 s longer than the rest
            await trio.sleep(3.0)
            return await run_batch(*args, **kwargs)

        executor.run_batch = late_run_batch  # type: ignore[method-assign]
        job = await owner.submit(module, tiles(1, 30_000), JobOptions(LIMITS, Replication(3, 2, 3)))
        with trio.fail_after(60):
            (result,) = await job.wait()
        assert result.status == "ok" and str(slow.peer_id) not in result.executors
        await wait_until(lambda: any(name == str(slow.peer_id) for name, _ in watch.revoked), 20,
                         "the slow thief to hear the revocation")  # fmt: skip
        await wait_until(lambda: job.job_id in executor.activity and executor.activity[job.job_id].running == 0, 30,
                         "the slow thief's chunk to end")  # fmt: skip
        assert watch.pushed_after_revocation() == []
        assert not any(name == str(slow.peer_id) for name, _ in watch.pushed), "the revoked replica's result was sent"
        await wait_until(lambda: executor.store.outbox_size() == 0, 10, "the revoked result to leave the outbox")


async def test_a_cancelled_job_stops_on_every_node_within_two_seconds(tmp_path: Path) -> None:
    """After a cancel no node starts a chunk of the job, the chunks under way end, and no result is pushed.

    A chunk under way runs to its end (a run cannot be stopped half way; the sandbox's time limit bounds it):
    "within two seconds" holds for chunks shorter than that, as these tiles are even on a busy machine.
    """
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, tmp_path, 3)
        owner = nodes[0]
        watch = Watch()
        for node in nodes[1:]:
            watch.attach(node)
        # tiles of about 0.3 s: a thief keeps two in stock, one running and one queued, so without
        # revocations its work would go on after the cancel, and its results be pushed
        job = await owner.submit(module, tiles(40, 60_000), JobOptions(LIMITS, Replication(2, 2, 2)))

        def everyone_runs_it() -> bool:
            thieves = [n._workers for n in nodes[1:]]
            return all(job.job_id in n.jobs.executor.activity for n in nodes) and all(w and w.queued() for w in thieves)

        await wait_until(everyone_runs_it, 60, "every node to run the job, with stock queued")
        cancelled_at = time.time()
        await job.cancel()
        for node in nodes:
            activity = node.jobs.executor.activity[job.job_id]
            await wait_until(lambda: activity.running == 0, 10, "the chunks under way to end")
            stopped = activity.last_ended - cancelled_at
            print(f"\n[cancel] {str(node.peer_id)[-6:]} ran its last chunk of the job until {stopped:+.2f} s")
            assert stopped <= 2.0, f"{node.peer_id} ran the job {stopped:.2f} s after it was cancelled"
        for node in nodes[1:]:  # no chunk started after the thief heard of the cancel
            heard = min(at for (name, _), at in watch.revoked.items() if name == str(node.peer_id))
            assert node.jobs.executor.activity[job.job_id].last_started_monotonic <= heard
        started = {n.peer_id: n.jobs.executor.activity[job.job_id].chunks for n in nodes}
        await trio.sleep(1.0)  # a window in which nothing may start: the thieves had stock queued
        assert {n.peer_id: n.jobs.executor.activity[job.job_id].chunks for n in nodes} == started
        assert watch.revoked and watch.pushed_after_revocation() == []
        assert [r.state for r in owner.jobs.store.jobs()] == ["cancelled"]
        assert all(n.surplus() == 0 and n.jobs.executor.store.outbox_size() == 0 for n in nodes)
