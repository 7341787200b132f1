"""Use a running node from any Python program: ``Client`` (blocking) and ``AsyncClient`` (asyncio)."""

from .asyncio_client import AsyncClient, AsyncJob
from .client import Client, Job
from ..errors import TaskFailed
from .results import Failure, Result

__all__ = ["AsyncClient", "AsyncJob", "Client", "Failure", "Job", "Result", "TaskFailed"]
