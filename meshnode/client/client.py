"""``meshnode.Client``: hand work to the node running on this machine, from any Python program.

A blocking client of the node's local API (plain scripts, notebooks, threads, web
apps); ``AsyncClient`` is the same for asyncio programs. A trio program can run
the node itself with ``open_node`` instead.

    from meshnode import Client

    with Client() as client:                      # the node of the default data dir
        job = client.submit("tasks_wasm/monte_carlo_pi.wasm", [{"seed": s, "samples": 100_000} for s in range(8)])
        for result in job.results():              # as the subtasks are decided
            print(result.index, result.output)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any, Final

from ..api.client import ApiClient
from ..api.discovery import ApiEndpoint, read_api_file
from ..api.job_body import JOB_CONTENT_TYPE, encode_job
from ..config import DEFAULT_LIMITS, resolve_data_dir
from ..errors import ApiError, ConfigError, InputError, JobRefused
from ..units import parse_count, parse_duration, parse_size
from .results import Result
from .task_source import encode_inputs, load_task

__all__ = ["Client", "Job"]

DEFAULT_TIMEOUT_S: Final = 30.0  # for one answer of the node; a job may take as long as it takes
UPLOAD_TIMEOUT_S: Final = 300.0  # between two chunks of a job's upload (the node hashes and journals as it reads)
WAIT_S: Final = 10  # how long one request for results waits at the node for the next one to be decided


class Client:
    """A client of one running node.

    Args:
        data_dir: the data dir of the node to use (default: ``$MESHNODE_DATA_DIR``, else
            the user data dir, as the command line finds it).
        url, token: the node's API address and token instead (both or neither), e.g. for a
            node started with ``--api`` in a container.
        timeout: seconds to wait for any one answer of the node.

    Raises:
        NodeNotRunning: no node runs with that data dir.
        ConfigError: only one of ``url`` and ``token`` was given.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, *, url: str | None = None, token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:  # fmt: skip
        if (url is None) != (token is None):
            raise ConfigError("Client: give both url and token, or neither (then the node is found by its data dir)")
        if url is not None and token is not None:
            self._api = ApiClient(ApiEndpoint(url.rstrip("/"), token, "", 0), None, timeout=timeout)
        else:
            directory = resolve_data_dir(data_dir)
            self._api = ApiClient(read_api_file(directory), directory, timeout=timeout)
        self._api.open()

    # --- jobs --------------------------------------------------------------------------------

    def submit(
        self, task: str | os.PathLike[str] | bytes, inputs: Iterable[Any], *,
        replicas: int | None = None, quorum: int | None = None, max_replicas: int = 5,
        fuel: int | str | None = None, memory: int | str | None = None, timeout: float | str | None = None,
        max_output: int | str | None = None, label: str | None = None, entry: str = "run",
        nan_canonical: bool = False, rows_per_subtask: int | None = None, verify: str | None = None,
    ) -> Job:  # fmt: skip
        """Start a job on the node: each input one subtask (one row, for a script), run on ``replicas``
        distinct peers and accepted when ``quorum`` of them agree, as ``meshnode submit`` does.

        Args:
            task: a path to a ``.wasm`` module or a ``.py`` script defining ``main(row)``, or a
                module's bytes.
            inputs: for a module, bytes, text or JSON-like values (sent as JSON); for a script,
                the rows ``main`` receives. Read as they are sent: a generator is fine.
            replicas, quorum, max_replicas: fixed replication: each subtask on ``replicas`` distinct
                peers (default 2), accepted when ``quorum`` (default 2) agree. On one machine alone, use
                ``replicas=1, quorum=1`` (unverified); otherwise the job waits for peers.
            verify: "adaptive" (the default unless ``replicas`` or ``quorum`` is given): one executor that
                has earned the node's trust, spot-checked at random, and a ``quorum`` otherwise; "fixed".
            fuel, memory, timeout, max_output: limits per subtask (``"256MiB"``, ``"30s"`` and
                ``"5G"`` are understood; defaults as the command line's).
            label: a name for the job (default: the task's file name).
            entry: a module's entry function. nan_canonical: canonical NaNs (mixed architectures).
            rows_per_subtask: a script's rows per subtask (default: chosen by the node from the
                script's measured cost).

        Raises:
            InputError: the task cannot be read, an input cannot be sent, or there are none.
            JobRefused: the node refused the job (a module that cannot run, bad options, a full disk), with its reason.
            NodeNotRunning: the node does not answer.
        """
        loaded = load_task(task)
        limits = DEFAULT_LIMITS
        options: dict[str, Any] = {
            "replicas": 2 if replicas is None else replicas, "quorum": 2 if quorum is None else quorum,
            "max_replicas": max_replicas,
            "fuel": _count(fuel, limits.fuel, parse_count, "fuel"),
            "memory": _count(memory, limits.memory, parse_size, "memory"),
            "timeout_ms": max(1, round(1000 * _seconds(timeout, limits.timeout_ms / 1000))),
            "max_output": _count(max_output, limits.max_output, parse_size, "max_output"),
            "label": (label if label is not None else loaded.name)[:200],
            "verify": verify or ("fixed" if replicas is not None or quorum is not None else "adaptive"),
        }  # fmt: skip
        if loaded.python:
            if entry != "run" or nan_canonical:
                raise ConfigError("entry and nan_canonical are for a WebAssembly module; a script runs main(row)")
            if rows_per_subtask is not None:
                options["rows_per_subtask"] = rows_per_subtask
        else:
            if rows_per_subtask is not None:
                raise ConfigError("rows_per_subtask is for a script's main(row), not a module")
            options.update(entry=entry, nan_canonical=nan_canonical)
        encoded = encode_inputs(inputs, loaded.python)
        first = next(encoded, None)
        if first is None:
            raise InputError("the job has no inputs")
        body = encode_job(loaded.module, options, itertools.chain([first], encoded))
        try:
            reply = self._api.request("POST", "/v1/jobs", body, JOB_CONTENT_TYPE, timeout=UPLOAD_TIMEOUT_S)
        except ApiError as exc:
            if not 400 <= exc.status < 500 and exc.status != 507:
                raise
            raise JobRefused(f"the node refused the job: {exc.error}", exc.status, exc.error) from None
        return Job(self, reply["job_id"], reply["subtasks"])

    def map(self, task: str | os.PathLike[str] | bytes, inputs: Iterable[Any], **options: Any) -> Iterator[Any]:
        """The outputs of ``task`` for ``inputs``, in input order, as ``concurrent.futures.Executor.map``
        gives them: one job (``submit``'s keywords apply), each output yielded as soon as it and
        those before it are decided.

        Raises:
            TaskFailed: when the iteration reaches a subtask that failed (the job runs on).
        """
        job = self.submit(task, inputs, **options)
        waiting: dict[int, Result] = {}
        position = 0
        for result in job.results():
            waiting[result.index] = result
            while position in waiting:
                yield waiting.pop(position).value()
                position += 1
        for index in sorted(waiting):  # a cancelled job: what was decided, in order
            yield waiting[index].value()

    def job(self, job_id: str) -> Job:
        """A job this node owns, by its ID (e.g. one submitted earlier or from the command line).

        Raises:
            MeshError: the node has no such job.
        """
        status = self._api.get(f"/v1/jobs/{job_id}")
        return Job(self, status["job_id"], status["total"])

    def jobs(self) -> list[dict[str, Any]]:
        """Every job this node owns or owned, oldest first, as ``meshnode jobs --json`` lists them."""
        jobs: list[dict[str, Any]] = self._api.get("/v1/jobs")["jobs"]
        return jobs

    def peers(self) -> list[dict[str, Any]]:
        """The peers this node knows, as ``meshnode peers --json`` lists them."""
        peers: list[dict[str, Any]] = self._api.get("/v1/peers")["peers"]
        return peers

    def node(self) -> dict[str, Any]:
        """This node: its peer ID, addresses, slots, version."""
        info: dict[str, Any] = self._api.get("/v1/node")
        return info

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<meshnode.Client {self._api.endpoint.url}>"

    def _get(self, path: str, *, timeout: float | None = None) -> Any:
        return self._api.get(path, timeout=timeout)

    def _post(self, path: str) -> Any:
        return self._api.post_json(path)


class Job:
    """A job on the node (``Client.submit``); ``id`` is its ID, ``subtasks`` how many it has."""

    def __init__(self, client: Client, job_id: str, subtasks: int) -> None:
        self.client = client
        self.id = job_id
        self.subtasks = subtasks

    def status(self) -> dict[str, Any]:
        """State (running, finished, cancelled) and progress (verified, failed, disputed, running,
        queued), as ``meshnode status JOB --json`` prints it."""
        status: dict[str, Any] = self.client._get(f"/v1/jobs/{self.id}")
        return status

    def results(self) -> Iterator[Result]:
        """Each result as soon as its subtask is decided (verified, failed or disputed), in that order;
        ends when the job has finished or was cancelled. Each call starts from the first result."""
        position = 0
        while True:
            page = self.page(position, wait=WAIT_S)
            for record in page["results"]:
                yield Result.from_record(record)
            position = page["next"]
            if page["ended"]:
                return

    def page(self, position: int, *, wait: int = 0) -> dict[str, Any]:
        """The raw API page of results from ``position`` in decision order (``AsyncJob`` uses it)."""
        timeout = self.client._api.timeout + wait
        page: dict[str, Any] = self.client._get(f"/v1/jobs/{self.id}/decided?from={position}&wait={wait}",
                                                timeout=timeout)  # fmt: skip
        return page

    def wait(self) -> list[Result]:
        """Every result, in index order, once the job has ended (a cancelled job: those decided)."""
        return sorted(self.results(), key=lambda result: result.index)

    def cancel(self) -> dict[str, Any]:
        """Stop the job across the mesh: nothing more is handed out and every holder is told to stop.
        Returns its status; what was decided stays readable."""
        status: dict[str, Any] = self.client._post(f"/v1/jobs/{self.id}/cancel")
        return status

    def __repr__(self) -> str:
        return f"<meshnode.Job {self.id} ({self.subtasks} subtasks)>"


def _count(value: int | str | None, default: int, parse: Any, name: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{name} must be a whole number or text such as '256MiB', not {type(value).__name__}")
    result: int = parse(value) if isinstance(value, str) else value
    return result


def _seconds(value: float | str | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"timeout must be seconds or text such as '30s', not {type(value).__name__}")
    return parse_duration(value) if isinstance(value, str) else float(value)

