"""A job submitted on one node spreads over the mesh: stolen, run, cross-verified, journalled."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
import hashlib
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from meshnode.core import wire

from meshnode.core.manifest import Replication, TaskLimits
from meshnode.core.manifest import JobOptions
from meshnode.core.output_codec import pack
from meshnode.errors import SandboxError
from meshnode.node.executing import RunResult
from meshnode.node.mesh_node import MeshNode, open_node
from meshnode.sandbox.local_exec import run_locally
from meshnode.sandbox.runtime import Sandbox
from meshnode.storage.identity import load_or_create_identity
from meshnode.storage.journal import OutboxEntry
from tests.sandbox import modules as m
from tests.tasks import reference

from ..waiting import JOB, MEET, wait_until
from .conftest import node_config

TASKS = Path(__file__).resolve().parents[2] / "tasks_wasm"


async def start_mesh(stack: AsyncExitStack, root: Path, count: int) -> list[MeshNode]:
    """``count`` one-slot nodes bootstrapped to the first, once every one sees all the others."""
    nodes: list[MeshNode] = []
    for i in range(count):
        boot = tuple(nodes[0].dial_addrs) if nodes else ()
        nodes.append(await stack.enter_async_context(open_node(node_config(root, f"n{i}", bootstrap=boot, slots=1))))
    await wait_until(lambda: all(len(n.table.alive()) == count - 1 for n in nodes), MEET, "the mesh")
    return nodes


async def test_a_mandelbrot_job_is_verified_by_two_distinct_peers_and_every_node_works(tmp_path: Path) -> None:
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    tiles = [
        json.dumps({"x0": x, "y0": y, "w": 64, "h": 64, "width": 512, "height": 512, "max_iter": 200}).encode()
        for y in range(0, 512, 64) for x in range(0, 512, 64)
    ]  # fmt: skip
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, tmp_path, 3)
        owner = nodes[0]
        options = JobOptions(limits=TaskLimits(10**10, 64 << 20, 60_000, 1 << 20), replication=Replication(2, 2, 4))
        job = await owner.submit(module, tiles, options)
        await wait_until(lambda: job.done, JOB, "the job to finish")
        outputs = owner.jobs.store.outputs(job.job_id)
        assert [o.status for o in outputs] == ["ok"] * len(tiles)
        assert [o.output for o in outputs] == [reference.mandelbrot(t) for t in tiles]
        assert all(len(set(o.detail["executors"])) == 2 for o in outputs)
        ran = {str(n.peer_id): n.jobs.executor.runs for n in nodes}
        assert all(count > 0 for count in ran.values()), ran
        for thief in nodes[1:]:  # what it asked for and got, as GET /v1/node tells it
            steals = thief.info()["steals"]
            assert steals["asked"] >= 1 and 1 <= steals["granted"] <= len(tiles) * 2, steals
            assert steals["asked"] >= steals.get("failed", 0) + steals.get("refused", 0), steals


async def test_a_module_without_the_entry_asked_for_is_refused_at_submit(tmp_path: Path) -> None:
    async with open_node(node_config(tmp_path, "a", slots=1)) as node:
        with pytest.raises(SandboxError, match=r"abi_error: no entry function 'run' of type \(i32, i32\) -> i64"):
            await node.submit(m.WRONG_ENTRY_TYPE, [b"x"], replicas=1, quorum=1)
        with pytest.raises(SandboxError, match="no entry function 'missing'.*found: first_byte, run"):
            await node.submit(m.TWO_ENTRIES, [b"x"], replicas=1, quorum=1, entry="missing")
        assert node.jobs.store.jobs() == [] and node.jobs.jobs == {}  # nothing journalled, nothing running
        job = await node.submit(m.TWO_ENTRIES, [b"xyz"], replicas=1, quorum=1, entry="first_byte")
        with trio.fail_after(20):
            assert [r.output for r in await job.wait()] == [b"x"]


def slow_down(node: MeshNode, seconds: float) -> None:
    """Make every batch ``node`` runs last at least ``seconds``: its results come out no sooner."""
    executor = node.jobs.executor
    honest_run_batch = executor.run_batch

    async def run_batch(manifest: Any, subtasks: Any, **kwargs: Any) -> list[RunResult]:
        start = trio.current_time()
        results = await honest_run_batch(manifest, subtasks, **kwargs)
        await trio.sleep_until(start + seconds)  # the length of the work, not a wait for something
        return results

    executor.run_batch = run_batch  # type: ignore[method-assign]


async def test_long_subtasks_keep_their_leases(tmp_path: Path) -> None:
    """Subtasks that outlast the lease are renewed by their holder, so no third node runs them again."""
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    tiles = [
        json.dumps({"x0": 0, "y0": 0, "w": 96, "h": 96, "width": 96, "height": 96, "max_iter": 90000 + i}).encode()
        for i in range(3)
    ]
    # A holder renews every third of the lease, so a renewal may come over a second late (a busy
    # machine) and the lease still hold; every batch runs for one and a half leases.
    lease = 2.0
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, tmp_path, 3)
        for node in nodes:
            slow_down(node, 1.5 * lease)
        options = JobOptions(
            limits=TaskLimits(10**11, 64 << 20, 60_000, 1 << 20), replication=Replication(2, 2, 2), lease_seconds=lease
        )
        job = await nodes[0].submit(module, tiles, options)
        await wait_until(lambda: job.done, JOB, "the job to finish")
        outputs = nodes[0].jobs.store.outputs(job.job_id)
        assert [o.status for o in outputs] == ["ok"] * len(tiles)
        # two replicas per subtask, each run once: a lapsed lease would hand one to a third node
        assert sum(n.jobs.executor.runs for n in nodes) == 2 * len(tiles)


async def test_renewals_an_owner_that_vanished_does_not_answer_are_counted(tmp_path: Path) -> None:
    """A holder keeps renewing its leases until it times a vanished owner out (no goodbye: the owner's
    process died); each renewal that nobody answered is counted, in ``GET /v1/node`` and ``/metrics``:
    the figure that says why work taken here may lapse at its owner."""
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    tiles = [
        json.dumps({"x0": 0, "y0": 0, "w": 96, "h": 96, "width": 96, "height": 96, "max_iter": 30000 + i}).encode()
        for i in range(8)
    ]
    options = JobOptions(
        limits=TaskLimits(10**11, 64 << 20, 60_000, 1 << 20), replication=Replication(1, 1, 1), lease_seconds=1.5
    )
    async with open_node(node_config(tmp_path, "holder", slots=1)) as holder:
        holder_metrics = holder.jobs.executor.metrics.registry
        with trio.CancelScope() as doomed:
            async with open_node(node_config(tmp_path, "owner", slots=1, bootstrap=tuple(holder.dial_addrs))) as owner:
                await wait_until(lambda: len(owner.table.alive()) == 1 == len(holder.table.alive()), MEET, "the mesh")
                slow_down(holder, 3 * JOB)  # its first batch outlasts the test: it holds that work throughout
                await owner.submit(module, tiles, options)
                assert holder._workers is not None
                workers = holder._workers
                await wait_until(lambda: any(workers.thief.held().values()), JOB, "the holder to take work")
                assert holder.info()["lease_renewals_failed"] == 0
                assert holder.info()["stolen_held"] == sum(map(len, workers.thief.held().values())) > 0
                doomed.cancel()  # no goodbye: as if the owner's process died
        await wait_until(lambda: holder.info()["lease_renewals_failed"] >= 1, JOB, "an unanswered renewal")
        counted = holder_metrics.get_sample_value("meshnode_lease_renewals_failed_total")
        assert counted is not None and counted >= 1


def mandelbrot_tiles(size: int, count: int, max_iter: int) -> list[bytes]:
    side = int(count**0.5)
    t = size // side
    return [
        json.dumps({"x0": x, "y0": y, "w": t, "h": t, "width": size, "height": size, "max_iter": max_iter}).encode()
        for y in range(0, size, t) for x in range(0, size, t)
    ]  # fmt: skip


async def exec_outputs(module: bytes, inputs: list[bytes], limits: TaskLimits) -> list[bytes | None]:
    """What ``exec`` computes for the same job on this machine alone."""
    outputs: list[bytes | None] = [None] * len(inputs)
    with Sandbox(slots=2) as sandbox:
        loaded = sandbox.load(module)
        await run_locally(sandbox, loaded, inputs, limits, lambda i, outcome: outputs.__setitem__(i, outcome.output))
    return outputs


async def mandelbrot_job(size: int, count: int, max_iter: int) -> tuple[bytes, list[bytes], TaskLimits, list[bytes | None]]:
    """The mandelbrot module, its tiles, limits, and the outputs ``exec`` gives for them."""
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    tiles = mandelbrot_tiles(size, count, max_iter)
    limits = TaskLimits(10**12, 64 << 20, 60_000, 1 << 20)
    return module, tiles, limits, await exec_outputs(module, tiles, limits)


async def test_four_nodes_render_a_4096_mandelbrot_in_256_tiles_each_verified_twice(tmp_path: Path) -> None:
    module, tiles, limits, expected = await mandelbrot_job(4096, 256, 256)
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, tmp_path, 4)
        job = await nodes[0].submit(module, tiles, JobOptions(limits=limits, replication=Replication(2, 2, 4)))
        with trio.fail_after(JOB):
            results = await job.wait()
        assert [r.status for r in results] == ["ok"] * len(tiles)
        assert [r.output for r in results] == expected
        assert all(len(set(r.executors)) == 2 for r in results)
        ran = {str(n.peer_id)[-6:]: n.jobs.executor.runs for n in nodes}
        assert all(count > 0 for count in ran.values()), ran
        assert sum(ran.values()) == 2 * len(tiles)  # nobody ran a replica twice, nothing was lost and redone


def corrupt_some_outputs(node: MeshNode, which: Callable[[int], bool] = lambda index: index % 2 == 0) -> list[int]:
    """Make ``node`` byzantine: its executor flips a byte of the outputs it computes for the subtasks
    ``which`` picks (every other one by default), signing the wrong result honestly. Returns the list of
    subtask indices it corrupted (filled in as it runs)."""
    executor = node.jobs.executor
    honest_run_batch = executor.run_batch
    corrupted: list[int] = []

    async def run_batch(manifest: Any, subtasks: Any, **kwargs: Any) -> list[RunResult]:
        results = await honest_run_batch(manifest, subtasks, **kwargs)
        out = []
        for r in results:
            if r.output and which(r.claim.index):
                output = r.output[:-1] + bytes([r.output[-1] ^ 1])
                claim = dataclasses.replace(r.claim, output_sha256=hashlib.sha256(output).digest())
                encoded = wire.encode(claim)
                entry = OutboxEntry(claim.job_id, claim.index, claim.replica, str(manifest.owner), encoded, output, 0, 0.0)
                node.jobs.store.record_runs([], [entry])
                r = dataclasses.replace(r, claim=claim, encoded=encoded, output=output, packed=pack(output))
                corrupted.append(claim.index)
            out.append(r)
        return out

    executor.run_batch = run_batch  # type: ignore[method-assign]
    return corrupted


async def test_a_byzantine_node_among_four_honest_ones_gets_nothing_accepted(tmp_path: Path) -> None:
    module, tiles, limits, expected = await mandelbrot_job(512, 64, 200)
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, tmp_path, 5)
        owner, byzantine = nodes[0], nodes[4]
        corrupted = corrupt_some_outputs(byzantine)
        job = await owner.submit(module, tiles, JobOptions(limits=limits, replication=Replication(2, 2, 5)))
        with trio.fail_after(JOB):
            results = await job.wait()
        assert corrupted, "the byzantine node never got work"
        assert [r.status for r in results] == ["ok"] * len(tiles)
        assert [r.output for r in results] == expected  # no wrong output was accepted
        bad = str(byzantine.peer_id)
        for index in corrupted:
            assert bad not in results[index].executors and len(set(results[index].executors)) == 2
        record = owner.reputation[byzantine.peer_id]
        assert record.disagreements >= 1 and owner.reputation.barred_from_quorum(byzantine.peer_id)
        honest = [owner.reputation.score(n.peer_id) for n in nodes[1:4]]
        assert all(owner.reputation.score(byzantine.peer_id) < score for score in honest)
        row = next(p for p in owner.peers() if p["peer_id"] == bad)
        assert row["reputation"]["barred"] is True


async def test_inputs_too_large_to_travel_inline_are_fetched_by_hash(tmp_path: Path) -> None:
    module = (TASKS / "monte_carlo_pi.wasm").read_bytes()
    # JSON allows trailing whitespace: 1.5 MiB inputs, over the 1 MiB a subtask may carry inline
    inputs = [json.dumps({"seed": i, "samples": 1000}).encode() + b" " * (3 << 19) for i in range(3)]
    async with AsyncExitStack() as stack:
        owner, thief = await start_mesh(stack, tmp_path, 2)
        job = await owner.submit(module, inputs, replicas=2, quorum=2, memory=64 << 20)
        with trio.fail_after(JOB):
            results = await job.wait()
        assert [r.output for r in results] == [reference.monte_carlo_pi(i) for i in inputs]
        assert all(set(r.executors) == {str(owner.peer_id), str(thief.peer_id)} for r in results)
        assert all(thief.jobs.blobs.has(hashlib.sha256(data).digest()) for data in inputs)  # fetched once each


async def test_a_thief_has_a_victim_it_is_not_connected_to_dialled_before_it_steals(tmp_path: Path) -> None:
    """A thief hears of work by gossip before it has a connection to the owner: it asks for the dial and
    waits for it, rather than send a steal that fails at once."""
    async with open_node(node_config(tmp_path, "a")) as a:
        async with open_node(node_config(tmp_path, "b", bootstrap=tuple(a.dial_addrs))) as b:
            await wait_until(lambda: len(b.table.alive()) == 1 and len(a.table.alive()) == 1, MEET, "the nodes to meet")
            assert b._workers is not None
            await b.host.disconnect(a.peer_id)
            assert not b.host.is_connected(a.peer_id)
            await b._workers._connect_first(a.peer_id)
            assert b.host.is_connected(a.peer_id)


async def test_a_steal_that_fails_is_counted_with_its_reason(tmp_path: Path) -> None:
    """``GET /v1/node`` says how many steals a node sent and why the failed ones failed, the victim's
    peer ID left out so that one reason counts once whoever it was."""
    async with open_node(node_config(tmp_path, "thief", slots=1)) as thief:
        assert thief._workers is not None
        elsewhere = load_or_create_identity(tmp_path / "elsewhere").peer_id  # a peer never connected
        assert await thief._workers.steal_from(elsewhere, 2) == 0
        info = thief.info()
        assert info["steals"] == {"asked": 1, "failed": 1}
        assert info["steal_failures"] == {"cannot open /meshnode/jobs/1.0.0 to <peer>: not connected": 1}
