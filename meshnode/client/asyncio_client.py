"""``meshnode.AsyncClient``: ``Client`` for asyncio programs (web apps, notebooks' event loops).

Each call runs the blocking ``Client``'s request in a worker thread
(``asyncio.to_thread``), so the event loop never waits on the node; a request
for results waits at the node for the next one, not in a loop here.

    async with AsyncClient() as client:
        job = await client.submit("task.wasm", inputs, replicas=1, quorum=1)
        async for result in job.results():
            ...
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .client import WAIT_S, Client, Job
from .results import Result

__all__ = ["AsyncClient", "AsyncJob"]


class AsyncClient:
    """``Client``'s calls as coroutines; the same arguments and errors. Create it with
    ``await AsyncClient.connect(...)`` or ``async with AsyncClient(...)``."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, **keywords: Any) -> None:
        self._args = (data_dir, keywords)
        self._client: Client | None = None

    @classmethod
    async def connect(cls, data_dir: str | os.PathLike[str] | None = None, **keywords: Any) -> AsyncClient:
        """A connected client (raises as ``Client`` does)."""
        client = cls(data_dir, **keywords)
        await client._connect()
        return client

    async def _connect(self) -> Client:
        if self._client is None:
            data_dir, keywords = self._args
            self._client = await asyncio.to_thread(Client, data_dir, **keywords)  # it reads the data dir's API file
        return self._client

    async def submit(self, task: str | os.PathLike[str] | bytes, inputs: Iterable[Any], **options: Any) -> AsyncJob:
        """``Client.submit``; the inputs are read in the worker thread as they are sent."""
        client = await self._connect()
        return AsyncJob(await asyncio.to_thread(client.submit, task, inputs, **options))

    async def map(self, task: str | os.PathLike[str] | bytes, inputs: Iterable[Any], **options: Any) -> list[Any]:
        """``Client.map``'s outputs, all of them, in input order (raises ``TaskFailed`` for a failed one)."""
        job = await self.submit(task, inputs, **options)
        return [result.value() for result in await job.wait()]

    async def job(self, job_id: str) -> AsyncJob:
        client = await self._connect()
        return AsyncJob(await asyncio.to_thread(client.job, job_id))

    async def jobs(self) -> list[dict[str, Any]]:
        client = await self._connect()
        return await asyncio.to_thread(client.jobs)

    async def peers(self) -> list[dict[str, Any]]:
        client = await self._connect()
        return await asyncio.to_thread(client.peers)

    async def node(self) -> dict[str, Any]:
        client = await self._connect()
        return await asyncio.to_thread(client.node)

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

    async def __aenter__(self) -> AsyncClient:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncJob:
    """``Job``'s calls as coroutines; ``id`` and ``subtasks`` as there."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.id = job.id
        self.subtasks = job.subtasks

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._job.status)

    async def results(self) -> AsyncIterator[Result]:
        """Each result as its subtask is decided (``Job.results``)."""
        position = 0
        while True:
            page = await asyncio.to_thread(self._job.page, position, wait=WAIT_S)
            for record in page["results"]:
                yield Result.from_record(record)
            position = page["next"]
            if page["ended"]:
                return

    async def wait(self) -> list[Result]:
        """Every result, in index order, once the job has ended."""
        return sorted([result async for result in self.results()], key=lambda result: result.index)

    async def cancel(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._job.cancel)

    def __repr__(self) -> str:
        return f"<meshnode.AsyncJob {self.id} ({self.subtasks} subtasks)>"
