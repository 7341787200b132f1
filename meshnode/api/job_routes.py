"""The job endpoints of the local API: submit, list, status, results.

    POST /v1/jobs/{id}/cancel      stop the job across the mesh -> its summary
    POST /v1/jobs/{id}/recheck     decide again its suspect lone results (adaptive replication) -> {"rechecked": N}
    POST /v1/jobs                  a framed job body (job_body.py) -> {"job_id", "subtasks"}
    GET  /v1/jobs                  {"jobs": [summary, ...]}
    GET  /v1/jobs/{id}             summary: state and progress
    GET  /v1/jobs/{id}/results     one page of results: ?after=INDEX&limit=N -> {"results", "next"}
    GET  /v1/jobs/{id}/decided     results as decided: ?from=K&limit=N&wait=S -> {"results", "next", "ended"}
    GET  /v1/credit                credit received and granted (credit_routes.py)

Submitting streams: the body is read as the node hashes and journals the inputs,
never held whole, and is refused (413) as soon as more than ``MAX_JOB_BYTES``
have arrived, with or without a ``Content-Length``. A bad body, bad options or a
module that cannot run is a 400 with a one-line ``error``; no job is created.

Results come in pages, in index order: ``results`` holds the decided subtasks
with an index above ``after`` (default: from the first), at most ``limit`` of
them (default ``DEFAULT_PAGE``, at most ``MAX_PAGE``) and fewer once their
outputs pass ``PAGE_OUTPUT_BYTES``; ``next`` is the ``after`` of the next page,
or null after the last one. A page read while the job runs can miss a subtask
decided later below its ``after``: read a job's results once it has ended.

To follow a running job, ask ``decided``: the results from position ``from`` (0 for the first) in
the order the subtasks were decided, at most ``limit`` subtasks' worth and fewer past
``PAGE_OUTPUT_BYTES``; when none is decided yet, the request waits up to ``wait`` seconds (at most
``MAX_WAIT_S``) for one. ``next`` is the ``from`` of the next request; ``ended`` is true once the
page holds the last result the job will ever have (a job of an earlier run of the node, all decided,
comes in index order).

Result records are those of ``exec`` (job_files.py), plus ``"status": "disputed"``
for a subtask whose executors never reached a quorum.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..core.manifest import JobManifest, JobOptions
from ..core.python_rows import row_records
from ..errors import BodyTooLarge, FrameError, JournalError, SandboxError, WireError
from .credit_routes import CreditBook, credit_routes
from .frame_stream import FrameReader, ThreadFrames
from .job_body import JOB_CONTENT_TYPE, MAX_JOB_BYTES, decode_header, job_decoder
from .job_files import output_value
from .job_options import job_options

if TYPE_CHECKING:
    from ..storage.journal import VerifiedOutput

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "PAGE_OUTPUT_BYTES", "JobDesk", "SubmittedJob", "job_routes"]

DEFAULT_PAGE: Final = 1000
MAX_PAGE: Final = 10_000
# A page stops early once its outputs add up to this much: a page of large outputs
# is one JSON document in the node's memory and the client's.
PAGE_OUTPUT_BYTES: Final = 16 << 20
_MAX_INDEX: Final = 2**31
# The longest a request for decided results waits for one: clients ask again, and a proxy or a
# client's timeout never sees a request hang for minutes.
MAX_WAIT_S: Final = 30
_WHOLE_NUMBER: Final = re.compile(r"-?[0-9]{1,12}")


class SubmittedJob(Protocol):
    """A job the node has taken: what the submitter is told."""

    @property
    def job_id(self) -> bytes: ...

    @property
    def manifest(self) -> JobManifest: ...


class JobDesk(CreditBook, Protocol):
    """What the job endpoints need from the node that owns the jobs: all of it, and nothing more.

    Called on the node's trio loop, except ``results_page``, which reads the
    journal and is called in a worker thread.
    """

    async def submit(self, module: bytes, inputs: Iterable[bytes], options: JobOptions) -> SubmittedJob:
        """Take a new job (raises as ``MeshNode.submit`` does)."""
        ...

    def job_ids(self) -> list[bytes]:
        """Every job this node owns or owned, oldest first."""
        ...

    def job_summary(self, job_id: bytes) -> dict[str, Any] | None:
        """The job's state and progress (JSON-ready), or None when this node has no such job."""
        ...

    def results_page(self, job_id: bytes, after: int, limit: int) -> list[VerifiedOutput]:
        """Up to ``limit`` decided subtasks with an index above ``after``, in index order."""
        ...

    def row_layout(self, job_id: bytes) -> tuple[int, int]:
        """A Python job's rows and rows per subtask (its results are one record per row); (0, 0) otherwise."""
        ...

    async def decided(self, job_id: bytes, start: int, limit: int, wait: float) -> tuple[list[int], bool] | None:
        """Up to ``limit`` subtask indices from position ``start`` in the order the subtasks were decided,
        waiting up to ``wait`` seconds for one when none is yet; and whether that is all the job will
        ever decide. None when this node has no such job."""
        ...

    def outputs_of(self, job_id: bytes, indices: list[int], max_bytes: int) -> list[VerifiedOutput | None]:
        """The outputs of the first of ``indices``, up to about ``max_bytes`` of them (at least one; None
        where the journal has none); read from the journal, in a worker thread."""
        ...

    async def cancel_job(self, job_id: bytes) -> bool:
        """Stop the job across the mesh; False when there is no such job (raises JournalError)."""
        ...

    async def recheck_job(self, job_id: bytes) -> int | None:
        """Decide again the job's results accepted on the word of an executor since caught lying; how
        many, or None when there is no such job (raises JournalError)."""
        ...


def job_routes(node: JobDesk, *, max_job_bytes: int = MAX_JOB_BYTES) -> list[Route]:
    """The job endpoints of ``node``, for ``serve_api(..., extra_routes=...)``.

    Args:
        node: the running node that owns the jobs.
        max_job_bytes: the largest body ``POST /v1/jobs`` reads (tests lower it).
    """

    async def submit(request: Request) -> JSONResponse:
        _check_declared(request, max_job_bytes)
        async with contextlib.aclosing(request.stream()) as chunks:
            reader = FrameReader(chunks, job_decoder(max_job_bytes), gone=(ClientDisconnect,))
            try:
                job = await _create(node, reader)
            except Exception as exc:
                refusal = _refusal(exc, reader)
                if refusal is None:
                    raise
                raise refusal from None
        return JSONResponse({"job_id": job.job_id.hex(), "subtasks": job.manifest.subtask_count})

    async def list_jobs(request: Request) -> JSONResponse:
        summaries = (node.job_summary(job_id) for job_id in node.job_ids())
        return JSONResponse({"jobs": [s for s in summaries if s is not None]})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(_summary(node, _job_id(request)))

    async def results(request: Request) -> JSONResponse:
        job_id = _job_id(request)
        after, limit = _page_query(request)
        # off the event loop: the journal's lock can be held for seconds by a thread writing a big job
        outputs = await trio.to_thread.run_sync(node.results_page, job_id, after, limit)
        return JSONResponse(_page(outputs, limit, node.row_layout(job_id)))

    async def decided(request: Request) -> JSONResponse:
        job_id = _job_id(request)
        start = _query_int(request, "from", 0, 0, _MAX_INDEX)
        limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        wait = _query_int(request, "wait", 0, 0, MAX_WAIT_S)
        found = await node.decided(job_id, start, limit, wait)
        if found is None:
            raise HTTPException(404, f"no job {job_id.hex()} on this node")
        indices, final = found
        read = await trio.to_thread.run_sync(node.outputs_of, job_id, indices, PAGE_OUTPUT_BYTES) if indices else []
        outputs = [output for output in read if output is not None]
        return JSONResponse({"results": _records(outputs, node.row_layout(job_id)), "next": start + len(read),
                             "ended": final and len(read) == len(indices)})  # fmt: skip

    async def cancel(request: Request) -> JSONResponse:
        job_id = _job_id(request)
        try:
            known = await node.cancel_job(job_id)
        except JournalError as exc:
            raise HTTPException(507, _one_line(f"the job is stopped, but its end was not journalled: {exc}")) from None
        if not known:
            raise HTTPException(404, f"no job {job_id.hex()} on this node")
        return JSONResponse(_summary(node, job_id))

    async def recheck(request: Request) -> JSONResponse:
        job_id = _job_id(request)
        try:
            count = await node.recheck_job(job_id)
        except JournalError as exc:
            raise HTTPException(507, _one_line(f"the recheck was not journalled: {exc}")) from None
        if count is None:
            raise HTTPException(404, f"no job {job_id.hex()} on this node")
        return JSONResponse({"rechecked": count})

    return [
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", status),
        Route("/v1/jobs/{job_id}/results", results),
        Route("/v1/jobs/{job_id}/decided", decided),
        Route("/v1/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/v1/jobs/{job_id}/recheck", recheck, methods=["POST"]),
        *credit_routes(node),
    ]


# --- submit ------------------------------------------------------------------------------------


def _check_declared(request: Request, max_job_bytes: int) -> None:
    """Refuse a body of the wrong type, or one whose declared length is over the limit, before reading it."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != JOB_CONTENT_TYPE:
        raise HTTPException(415, f"a job is sent as {JOB_CONTENT_TYPE}, not {content_type or 'an untyped body'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_job_bytes:
        raise HTTPException(413, f"bad job: {declared} bytes is over the {max_job_bytes}-byte limit")


async def _create(node: JobDesk, reader: FrameReader) -> SubmittedJob:
    """Read the header, check it, and have the node create the job from the rest of the body.

    The node compiles the module before it reads any input, so a module that
    cannot run is refused before the inputs are uploaded.
    """
    header = decode_header(await reader.next_frame())
    options = job_options(header.options)
    # node.submit reads the inputs in a worker thread; ThreadFrames feeds it from
    # this request's body, chunk by chunk, through trio.from_thread.
    return await node.submit(header.module, ThreadFrames(reader), options)


def _refusal(exc: Exception, reader: FrameReader) -> HTTPException | None:
    """The 4xx answer for a failed submission, or None for a failure of the node itself (a 500).

    A body problem met in the worker thread is read from the reader, not only
    from ``exc``: whatever code sat between the thread and here, the body is to blame.
    """
    body_error = reader.error if reader.error is not None else exc if isinstance(exc, FrameError) else None
    if body_error is not None:
        return HTTPException(413 if isinstance(body_error, BodyTooLarge) else 400, _one_line(f"bad job: {body_error}"))
    if isinstance(exc, SandboxError):
        return HTTPException(400, _one_line(f"the module cannot run: {exc}"))
    if isinstance(exc, JournalError):  # the disk is full, say: nothing of the job was kept
        return HTTPException(507, _one_line(f"the node cannot take the job: {exc}"))
    if isinstance(exc, WireError | ValueError):  # node.submit: no inputs, or a policy that can never verify
        return HTTPException(400, _one_line(f"bad job: {exc}"))
    return None


def _one_line(message: str) -> str:
    """``message`` with its line breaks folded: a wasm validation error can span several lines."""
    return " ".join(message.split())


# --- results -----------------------------------------------------------------------------------


def _page_query(request: Request) -> tuple[int, int]:
    """``after`` and ``limit`` from the query string, checked.

    Raises:
        HTTPException: 400, either is not a whole number in its range.
    """
    after = _query_int(request, "after", -1, -1, _MAX_INDEX)
    limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    return after, limit


def _query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    # at most 12 digits: int() of a long enough string is slow, and out of range anyway
    if not _WHOLE_NUMBER.fullmatch(text) or not lo <= int(text) <= hi:
        raise HTTPException(400, f"{name} must be a whole number in {lo}..{hi}, not {text[:40]!r}")
    return int(text)


def _page(outputs: list[VerifiedOutput], limit: int, layout: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """One page of result records, cut short once their outputs pass ``PAGE_OUTPUT_BYTES``.

    A Python job's subtask becomes one record per row; ``next`` counts subtasks either way.
    """
    size = taken = 0
    for output in outputs:
        taken += 1
        size += len(output.output or b"")
        if size >= PAGE_OUTPUT_BYTES:
            break
    full = taken < len(outputs) or len(outputs) == limit
    return {"results": _records(outputs[:taken], layout), "next": outputs[taken - 1].index if full and taken else None}


def _records(outputs: list[VerifiedOutput], layout: tuple[int, int]) -> list[dict[str, Any]]:
    """The result records of ``outputs``: one per subtask, or one per row of a Python job's subtasks."""
    if not layout[1]:
        return [_record(output) for output in outputs]
    records: list[dict[str, Any]] = []
    for output in outputs:
        record = _record(output)
        error = record.get("error")
        extra: dict[str, Any] = {k: record[k] for k in ("sha256", "candidates", "executors", "verified_by", "revised")
                                 if k in record}  # fmt: skip
        raw = output.output if output.status == "ok" else None
        records.extend(row_records(output.index, layout[0], layout[1], raw, error, extra))
    return records


# --- status ------------------------------------------------------------------------------------


def _summary(node: JobDesk, job_id: bytes) -> dict[str, Any]:
    summary = node.job_summary(job_id)
    if summary is None:
        raise HTTPException(404, f"no job {job_id.hex()} on this node")
    return summary


def _job_id(request: Request) -> bytes:
    try:
        job_id = bytes.fromhex(request.path_params["job_id"])
    except ValueError:
        job_id = b""
    if len(job_id) != 16:
        raise HTTPException(404, "no such job (a job ID is 32 hex characters)")
    return job_id


def _record(o: VerifiedOutput) -> dict[str, Any]:
    record = _outcome(o)
    if "verified_by" in o.detail:  # how far to trust it: "quorum", "single+spotcheck" or "single"
        record["verified_by"] = o.detail["verified_by"]
    if o.detail.get("revised"):  # it replaces a result accepted on the word of an executor since caught lying
        record["revised"] = True
    return record


def _outcome(o: VerifiedOutput) -> dict[str, Any]:
    executors = list(o.detail.get("executors", []))
    if o.status == "ok" and o.output is not None:
        return {"index": o.index, "status": "ok", "output": output_value(o.output),
                "sha256": hashlib.sha256(o.output).hexdigest(), "executors": executors}  # fmt: skip
    if o.status == "disputed":
        candidates = [{"sha256": c["sha256"], "status": c["status"], "executors": c["executors"]}
                      for c in o.detail.get("candidates", [])]  # fmt: skip
        return {"index": o.index, "status": "disputed", "output": None, "sha256": None,
                "error": {"code": "disputed", "message": str(o.detail.get("message", "no quorum"))},
                "candidates": candidates, "executors": executors}  # fmt: skip
    return {"index": o.index, "status": "error", "output": None, "sha256": None,
            "error": {"code": o.status, "message": str(o.detail.get("message", ""))}, "executors": executors}  # fmt: skip
