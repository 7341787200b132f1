"""``meshnode.AsyncClient`` from ``asyncio.run`` against a real node process; ``open_node`` refuses asyncio plainly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshnode import AsyncClient, MeshError, NodeConfig, open_node
from tests.cli.nodes import NodeProcess

ALONE = {"replicas": 1, "quorum": 1}


def test_asyncio_submits_streams_and_cancels(node: NodeProcess, tasks: dict[str, Path]) -> None:
    async def main() -> tuple[list[int], list[int], str, int]:
        ticks = 0

        async def ticker() -> None:  # the event loop stays free while the client waits for the node
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        async with AsyncClient(node.data_dir) as client:
            job = await client.submit(tasks["echo"], range(40), **ALONE)
            streamed = [r.output async for r in job.results()]
            mapped = await client.map(tasks["echo"], [3, 1, 2], **ALONE)
            slow = await client.submit(tasks["slow"], range(400), **ALONE)
            async for _ in slow.results():
                break
            state = (await slow.cancel())["state"]
        tick.cancel()
        return streamed, mapped, state, ticks

    streamed, mapped, state, ticks = asyncio.run(main())
    assert sorted(streamed) == list(range(40))
    assert mapped == [3, 1, 2]
    assert state == "cancelled"
    assert ticks > 0


def test_open_node_under_asyncio_says_what_to_use(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_node(NodeConfig(data_dir=tmp_path, mdns=False, api=None)):
            pass

    with pytest.raises(MeshError, match="open_node runs a node inside a trio program.*meshnode.AsyncClient"):
        asyncio.run(main())
