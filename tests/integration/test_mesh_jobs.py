"""A job submitted on one node spreads over the mesh: stolen, run, cross-verified, journalled."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

from meshnode.core.manifest import Replication, TaskLimits
from meshnode.jobs import JobOptions
from meshnode.node import MeshNode, open_node
from tests.tasks import reference

from .conftest import node_config, wait_until

TASKS = Path(__file__).resolve().parents[2] / "tasks_wasm"


async def start_mesh(stack: AsyncExitStack, root: Path, count: int) -> list[MeshNode]:
    """``count`` one-slot nodes bootstrapped to the first, once every one sees all the others."""
    nodes: list[MeshNode] = []
    for i in range(count):
        boot = tuple(nodes[0].dial_addrs) if nodes else ()
        nodes.append(await stack.enter_async_context(open_node(node_config(root, f"n{i}", bootstrap=boot, slots=1))))
    await wait_until(lambda: all(len(n.table.alive()) == count - 1 for n in nodes), 20, "the mesh")
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
        await wait_until(lambda: job.owner.finished, 120, "the job to finish")
        outputs = owner.jobs.store.outputs(job.job_id)
        assert [o.status for o in outputs] == ["ok"] * len(tiles)
        assert [o.output for o in outputs] == [reference.mandelbrot(t) for t in tiles]
        assert all(len(set(o.detail["executors"])) == 2 for o in outputs)
        ran = {str(n.peer_id): n.jobs.executor.runs for n in nodes}
        assert all(count > 0 for count in ran.values()), ran


async def test_long_subtasks_keep_their_leases(tmp_path: Path) -> None:
    """Subtasks that outlast the lease are renewed by their holder, so no third node runs them again."""
    module = (TASKS / "mandelbrot.wasm").read_bytes()
    # about 0.5 s each on this machine; the lease is 0.2 s
    tiles = [
        json.dumps({"x0": 0, "y0": 0, "w": 96, "h": 96, "width": 96, "height": 96, "max_iter": 90000 + i}).encode()
        for i in range(3)
    ]
    async with AsyncExitStack() as stack:
        nodes = await start_mesh(stack, tmp_path, 3)
        options = JobOptions(
            limits=TaskLimits(10**11, 64 << 20, 60_000, 1 << 20), replication=Replication(2, 2, 2), lease_seconds=0.2
        )
        job = await nodes[0].submit(module, tiles, options)
        await wait_until(lambda: job.owner.finished, 120, "the job to finish")
        outputs = nodes[0].jobs.store.outputs(job.job_id)
        assert [o.status for o in outputs] == ["ok"] * len(tiles)
        # two replicas per subtask, each run once: a lapsed lease would hand one to a third node
        assert sum(n.jobs.executor.runs for n in nodes) == 2 * len(tiles)
