"""The job endpoints of the local API: submit, list, status, results.

    POST /v1/jobs                  CBOR {module, inputs, options} -> {"job_id", "subtasks"}
    GET  /v1/jobs                  {"jobs": [summary, ...]}
    GET  /v1/jobs/{id}             summary: state and progress
    GET  /v1/jobs/{id}/results     {"results": [one record per decided subtask, in index order]}

Results use the same records as ``exec`` (jobio.py), plus ``"status": "disputed"``
for a subtask whose executors never reached a quorum.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

import cbor2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..core import wire
from ..core.manifest import JobManifest, Replication, TaskLimits
from ..errors import JournalError, WireError
from ..jobio import output_value
from ..jobs import JobOptions

if TYPE_CHECKING:
    from ..node import MeshNode

__all__ = ["job_routes"]

MAX_SUBMIT_BYTES: Final = 1 << 30


def _options(raw: Any) -> JobOptions:
    if not isinstance(raw, dict):
        raise ValueError("options must be a map")
    replication = Replication(int(raw["replicas"]), int(raw["quorum"]), int(raw["max_replicas"]))
    problem = replication.check()
    if problem:
        raise ValueError(problem)
    limits = TaskLimits(int(raw["fuel"]), int(raw["memory"]), int(raw["timeout_ms"]), int(raw["max_output"]))
    return JobOptions(
        limits=limits, replication=replication, entry=str(raw.get("entry", "run")),
        nan_canonical=bool(raw.get("nan_canonical", False)), label=str(raw.get("label", ""))[:200],
    )  # fmt: skip


def job_routes(node: MeshNode) -> list[Route]:
    async def submit(request: Request) -> JSONResponse:
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_SUBMIT_BYTES:
            raise HTTPException(413, f"a job of {declared} bytes is over the {MAX_SUBMIT_BYTES}-byte limit")
        try:
            body = cbor2.loads(await request.body())
            module, inputs = body["module"], body["inputs"]
            if not isinstance(module, bytes) or not isinstance(inputs, list) or not inputs:
                raise ValueError("module must be bytes and inputs a non-empty list of bytes")
            if not all(isinstance(i, bytes) for i in inputs):
                raise ValueError("every input must be bytes")
            options = _options(body["options"])
        except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError) as exc:
            raise HTTPException(400, f"bad job: {exc}") from None
        try:
            job = await node.submit(module, inputs, options)
        except WireError as exc:
            raise HTTPException(400, f"bad job: {exc}") from None
        except JournalError as exc:  # the disk is full, say: nothing of the job was kept
            raise HTTPException(507, f"the node cannot take the job: {exc}") from None
        except Exception as exc:  # SandboxError: the module cannot run at all
            raise HTTPException(400, f"the module cannot run: {exc}") from None
        return JSONResponse({"job_id": job.job_id.hex(), "subtasks": len(inputs)})

    async def list_jobs(request: Request) -> JSONResponse:
        return JSONResponse({"jobs": [_summary(node, j.job_id) for j in node.jobs.store.jobs()]})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(_summary(node, _job_id(request)))

    async def results(request: Request) -> JSONResponse:
        job_id = _job_id(request)
        return JSONResponse({"results": [_record(o) for o in node.jobs.store.outputs(job_id)]})

    return [
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", status),
        Route("/v1/jobs/{job_id}/results", results),
    ]


def _job_id(request: Request) -> bytes:
    try:
        job_id = bytes.fromhex(request.path_params["job_id"])
    except ValueError:
        job_id = b""
    if len(job_id) != 16:
        raise HTTPException(404, "no such job (a job ID is 32 hex characters)")
    return job_id


def _summary(node: MeshNode, job_id: bytes) -> dict[str, Any]:
    job = node.jobs.jobs.get(job_id)
    if job is not None:
        p = job.progress()
        alive = len(node.table.alive())
        policy = job.manifest.replication
        needed = max(policy.replicas, policy.quorum) - 1  # the owner runs one replica itself
        return {
            "job_id": job_id.hex(), "label": job.manifest.label,
            "state": "running" if not job.done else "cancelled" if job.owner.cancelled else "finished",
            "total": p.total, "verified": p.verified, "failed": p.failed, "disputed": p.disputed,
            "running": p.running, "queued": p.queued, "peers_working": p.working,
            "refusals": dict(job.refusals), "problem": f"paused: {job.paused}" if job.paused else "",
            "waiting_for_peers": None if alive >= needed or job.owner.finished else {"have": alive, "need": needed},
        }  # fmt: skip
    saved = node.jobs.store.job(job_id)
    if saved is None:
        raise HTTPException(404, f"no job {job_id.hex()} on this node")
    counts = node.jobs.store.counts(job_id)
    damaged = node.jobs.damaged.get(job_id)
    problem = (
        f"damaged: {damaged}. Its {sum(counts.values())} journalled results can still be read "
        f"(meshnode results {job_id.hex()}); submit it again to run the rest"
    ) if damaged else ""  # fmt: skip
    ok, disputed = counts.get("ok", 0), counts.get("disputed", 0)
    return {
        "job_id": job_id.hex(), "label": _label(saved.manifest), "state": "damaged" if damaged else saved.state,
        "total": saved.subtasks or sum(counts.values()), "verified": ok, "disputed": disputed,
        "failed": sum(counts.values()) - ok - disputed, "running": 0, "queued": 0,
        "peers_working": 0, "refusals": {}, "problem": problem, "waiting_for_peers": None,
    }  # fmt: skip


def _label(envelope: bytes) -> str:
    try:
        return wire.open_self_signed(envelope, JobManifest, "owner").label
    except WireError:
        return ""


def _record(o: Any) -> dict[str, Any]:
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
