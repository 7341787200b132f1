"""Work stealing beyond one hop, and refusals: real hosts, real wasmtime, real journals."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from meshnode.config import TrustPolicy
from meshnode.core.output_codec import PLAIN
from meshnode.core.job_messages import PushedResult, ResultPush
from meshnode.core.manifest import Replication
from meshnode.core.manifest import JobOptions
from meshnode.core.owner import MAX_AHEAD
from meshnode.core.thief import MAX_STEAL
from meshnode.net.blob_protocol import fetch_from_any
from meshnode.net.job_protocol import JobClient
from meshnode.node.mesh_node import open_node
from meshnode.sandbox.runtime import ENGINE_ID, Sandbox
from tests.sandbox import modules as m
from tests.tasks import reference

from ..waiting import MEET, STEP, wait_until
from .conftest import node_config
from .test_jobs_protocol import INPUTS, OPTIONS, TASK, side


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_stolen_work_is_stolen_again_through_the_owner(tmp_path: Path) -> None:
    """C robs B of replicas B stole from A: A moves the leases, C's results count, B's no longer would."""
    with Sandbox(slots=1) as sandbox:
        async with side(tmp_path / "a", sandbox) as a, side(tmp_path / "b", sandbox) as b, side(tmp_path / "c", sandbox) as c:
            one = JobOptions(limits=OPTIONS.limits, replication=Replication(1, 1, 1))
            job = a.manager.submit(TASK, INPUTS, one, now_ms=now_ms())
            for thief in (b, c):
                await thief.host.dial(a.host.peer_id, a.host.listen_addrs)
            await c.host.dial(b.host.peer_id, b.host.listen_addrs)
            workers = b.workers

            assert await workers.steal_from(a.host.peer_id, 6) == 6
            assert workers.surplus() == 5  # it keeps one per slot for itself
            busy = await JobClient(c.host).steal(b.host.peer_id, 3, 1, ENGINE_ID, queued=1)
            assert busy.grants == ()  # only a thief with nothing queued is served from stolen work
            reply = await JobClient(c.host).steal(b.host.peer_id, 2, 2, ENGINE_ID, queued=0)
            (grant,) = reply.grants  # from the cold end, at most half its surplus
            assert len(grant.subtasks) == 2 and workers.queued() == 4 and reply.surplus == 3

            await fetch_from_any(c.host, [a.host.peer_id], job.manifest.module_sha256, c.manager.blobs)
            pushed, moved = [], []
            for data in grant.subtasks:  # C checks A's signature and the proofs, runs, and answers A directly
                manifest, subtask = c.manager.executor.check(grant.manifest, data, now_ms())
                result = await c.manager.executor.run(manifest, subtask)
                pushed.append(PushedResult(claim=result.encoded, output=result.output, codec=PLAIN))
                moved.append(subtask)
            ack = await JobClient(c.host).push(a.host.peer_id, ResultPush(results=tuple(pushed)))
            assert [x.status for x in ack.acks] == ["accepted", "accepted"]
            outputs = {o.index: o for o in a.manager.store.outputs(job.job_id)}
            for subtask in moved:
                assert outputs[subtask.index].detail["executors"] == [str(c.host.peer_id)]
                assert outputs[subtask.index].output == reference.monte_carlo_pi(INPUTS[subtask.index])

            # B gave those replicas up unrun: a claim from it for one of them is not accepted
            manifest, subtask = b.manager.executor.check(grant.manifest, grant.subtasks[0], now_ms())
            forged = await b.manager.executor.run(manifest, subtask)
            ack = await JobClient(b.host).push(a.host.peer_id, ResultPush(results=(PushedResult(claim=forged.encoded, output=forged.output, codec=PLAIN),)))
            assert ack.acks[0].status in ("rejected", "late")


async def test_a_thief_held_back_is_told_what_is_left_and_one_with_nothing_left_is_not(tmp_path: Path) -> None:
    """A thief bound to MAX_AHEAD subtasks whose other replicas nobody ran yet gets nothing more until the others
    catch up; the answer says work is left, so it asks again soon instead of waiting for news of work."""
    with Sandbox(slots=1) as sandbox:
        async with side(tmp_path / "a", sandbox) as a, side(tmp_path / "b", sandbox) as b:
            await b.host.dial(a.host.peer_id, a.host.listen_addrs)
            client = JobClient(b.host)
            job = a.manager.submit(m.ECHO, [b"%d" % i for i in range(MAX_AHEAD + 8)], OPTIONS, now_ms=now_ms())
            taken = 0
            for request_id in range(1, MAX_AHEAD // MAX_STEAL + 1):
                reply = await client.steal(a.host.peer_id, MAX_STEAL, request_id, ENGINE_ID)
                taken += sum(len(g.subtasks) for g in reply.grants)
            assert taken == MAX_AHEAD
            reply = await client.steal(a.host.peer_id, MAX_STEAL, MAX_AHEAD, ENGINE_ID)
            assert reply.grants == () and reply.refused == "" and reply.surplus == job.owner.surplus() > 0

            # every subtask of this one is taken: what is left (the second replicas) is never for this thief
            small = a.manager.submit(m.ECHO, [b"%d" % i for i in range(8)], OPTIONS, now_ms=now_ms())
            await a.manager.cancel(job)  # it would go on holding the thief back
            reply = await client.steal(a.host.peer_id, MAX_STEAL, MAX_AHEAD + 1, ENGINE_ID)
            assert sum(len(g.subtasks) for g in reply.grants) == 8
            reply = await client.steal(a.host.peer_id, MAX_STEAL, MAX_AHEAD + 2, ENGINE_ID)
            assert reply.grants == () and small.owner.surplus() == 8 and reply.surplus == 0


async def test_an_idle_owner_gets_its_replicas_back_from_a_thief(tmp_path: Path) -> None:
    with Sandbox(slots=1) as sandbox:
        async with side(tmp_path / "a", sandbox) as a, side(tmp_path / "b", sandbox) as b:
            one = JobOptions(limits=OPTIONS.limits, replication=Replication(1, 1, 1))
            job = a.manager.submit(TASK, INPUTS, one, now_ms=now_ms())
            await b.host.dial(a.host.peer_id, a.host.listen_addrs)
            workers = b.workers
            assert await workers.steal_from(a.host.peer_id, 8) == 8 and job.owner.surplus() == 0
            reply = await JobClient(a.host).steal(b.host.peer_id, 8, 1, ENGINE_ID, queued=0)
            assert reply.grants == ()  # nothing to run as a thief: the replicas go back to its own queue
            assert job.owner.surplus() == 4 and workers.queued() == 4 and job.refusals == {}
            assert reply.surplus == 0  # and nothing is left there for it


async def test_an_idle_owner_takes_back_no_replica_of_a_subtask_it_ran(tmp_path: Path) -> None:
    """Replicas 2 on two nodes: the thief's replicas are of subtasks whose other replica the owner ran; given
    back, they would only wait in the owner's queue for the thief to steal them again."""
    with Sandbox(slots=1) as sandbox:
        async with side(tmp_path / "a", sandbox) as a, side(tmp_path / "b", sandbox) as b:
            job = a.manager.submit(TASK, INPUTS, OPTIONS, now_ms=now_ms())
            await b.host.dial(a.host.peer_id, a.host.listen_addrs)
            assert await b.workers.steal_from(a.host.peer_id, 8) == 8  # replica 0 of every subtask
            grant = await a.manager.take(job, 8, time.monotonic())
            assert grant is not None and {r.replica for r in grant.replicas} == {1} and len(grant.replicas) == 8
            reply = await JobClient(a.host).steal(b.host.peer_id, 8, 1, ENGINE_ID, queued=0)
            assert reply.grants == () and reply.surplus == 0
            assert b.workers.queued() == 8 and job.owner.surplus() == 0 and job.owner.progress().running == 8


async def test_a_thief_with_no_connection_to_the_owner_asks_for_one_and_then_steals(tmp_path: Path) -> None:
    """On a loaded LAN a pair can stay unconnected for a minute of redial backoff: a thief that fails to steal
    for want of a connection says so (``Workers.want``; the node dials at once), and steals once connected."""
    with Sandbox(slots=1) as sandbox:
        async with side(tmp_path / "a", sandbox) as a, side(tmp_path / "b", sandbox) as b:
            job = a.manager.submit(TASK, INPUTS, OPTIONS, now_ms=now_ms())
            wanted: list[object] = []
            b.workers.want = wanted.append
            assert await b.workers.steal_from(a.host.peer_id, 4) == 0
            assert wanted == [a.host.peer_id]
            await b.host.dial(a.host.peer_id, a.host.listen_addrs)  # what the node does with the want
            assert await b.workers.steal_from(a.host.peer_id, 4) == 4 and wanted == [a.host.peer_id]
            assert job.owner.surplus() == 2 * len(INPUTS) - 4


async def test_an_untrusting_node_refuses_and_the_owner_hears_why(tmp_path: Path) -> None:
    module = TASK
    async with open_node(node_config(tmp_path, "a", slots=1)) as a:
        stranger = TrustPolicy(frozenset())  # trusts nobody
        async with open_node(node_config(tmp_path, "b", slots=1, bootstrap=tuple(a.dial_addrs), trust=stranger)) as b:
            await wait_until(lambda: len(a.table.alive()) == 1 and len(b.table.alive()) == 1, MEET, "the two nodes to meet")
            job = await a.submit(module, INPUTS, replicas=2, quorum=2)  # b is the only other node to run them
            await wait_until(lambda: str(b.peer_id) in job.refusals, STEP, "the refusal to reach the owner")
            assert "does not run jobs for" in job.refusals[str(b.peer_id)]
            (refused_here,) = b.info()["refused_work"].items()  # b's own count, by reason, for its dashboard
            assert "does not run jobs for" in refused_here[0] and refused_here[1] >= 1
            await wait_until(lambda: job.progress().queued == len(INPUTS), STEP, "the refused replicas to come back")
            assert job.progress().verified == 0 and not job.owner.finished
            assert b.jobs.executor.runs == 0 and b.jobs.executor.cache_hits == 0  # nothing ran on b
            await job.cancel()


async def test_the_python_api_yields_results_as_they_are_verified(tmp_path: Path) -> None:
    async with open_node(node_config(tmp_path, "a", slots=2)) as node:
        job = await node.submit(TASK, iter(INPUTS), replicas=1, quorum=1, fuel=10**9, timeout=10)
        seen = [r async for r in job.results()]
        assert sorted(r.index for r in seen) == list(range(len(INPUTS)))
        results = await job.wait()
        assert [r.index for r in results] == list(range(len(INPUTS)))
        assert [r.output for r in results] == [reference.monte_carlo_pi(i) for i in INPUTS]
        assert all(r.status == "ok" and r.executors == (str(node.peer_id),) for r in results)


async def test_a_cancelled_job_stops_and_is_not_resumed(tmp_path: Path) -> None:
    async with open_node(node_config(tmp_path, "a", slots=1)) as node:
        job = await node.submit(TASK, INPUTS, replicas=2, quorum=2)  # alone, it can never verify anything
        await wait_until(lambda: job.progress().queued == len(INPUTS), STEP, "its own replicas to run")
        with trio.fail_after(STEP):
            await job.cancel()
            assert [r async for r in job.results()] == []
        assert job.owner.finished and node.surplus() == 0
        assert [j.state for j in node.jobs.store.jobs()] == ["cancelled"]
    async with open_node(node_config(tmp_path, "a", slots=1)) as node:
        assert node.jobs.jobs == {}
