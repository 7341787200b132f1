"""A job's state and progress as the local API and ``meshnode status`` show them.

A running job is described from its owner's state machine; a finished,
cancelled or damaged one from what the journal holds.
"""

from __future__ import annotations

from typing import Any

from ..core import wire
from ..core.manifest import JobManifest
from ..errors import WireError
from .owning import JobManager

__all__ = ["job_summary", "journal_states", "row_layout"]


def job_summary(jobs: JobManager, job_id: bytes, peers_alive: int) -> dict[str, Any] | None:
    """The summary of ``job_id``, or None when this node owns no such job.

    Args:
        jobs: the node's jobs.
        job_id: the job.
        peers_alive: how many peers this node hears now (a running job that needs
            more than that is shown as waiting for peers).
    """
    job = jobs.jobs.get(job_id)
    if job is not None:
        p = job.progress()
        policy = job.manifest.replication
        needed = max(policy.replicas, policy.quorum) - 1  # the owner runs one replica itself
        return {
            "job_id": job_id.hex(), "label": job.manifest.label,
            "state": "running" if not job.done else "cancelled" if job.owner.cancelled else "finished",
            "total": p.total, "verified": p.verified, "failed": p.failed, "disputed": p.disputed,
            "running": p.running, "queued": p.queued, "peers_working": p.working,
            "refusals": dict(job.refusals), "problem": f"paused: {job.paused}" if job.paused else "",
            "waiting_for_peers": (
                None if peers_alive >= needed or job.owner.finished else {"have": peers_alive, "need": needed}
            ),
            "cost": job.stats.summary(), "verify": "adaptive" if job.owner.adaptive else "fixed",
            "suspect": _suspect(jobs, job_id),
        }  # fmt: skip
    saved = jobs.store.job(job_id)
    if saved is None:
        return None
    counts = jobs.store.counts(job_id)
    damaged = jobs.damaged.get(job_id)
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
        "cost": None,  # counted in memory, by the run of the node that ran the job
        "verify": None, "suspect": _suspect(jobs, job_id),
    }  # fmt: skip


def _suspect(jobs: JobManager, job_id: bytes) -> int:
    """Results accepted on the word of one executor that was caught lying since (``meshnode results --recheck``)."""
    return sum(len(indices) for indices in jobs.store.suspects(job_id).values())


def journal_states(jobs: JobManager, job_id: bytes) -> str | None:
    """One letter per subtask (as ``JobOwner.state_letters``) of a job no longer running, from the
    journal; None when this node owns no such job. Reads the journal: call it in a worker thread."""
    saved = jobs.store.job(job_id)
    if saved is None:
        return None
    verdicts = list(jobs.store.verdicts(job_id))
    letters = bytearray(b"q" * max(saved.subtasks, verdicts[-1][0] + 1 if verdicts else 0))
    for index, status in verdicts:
        letters[index] = ord("v" if status == "ok" else "d" if status == "disputed" else "f")
    return letters.decode("ascii")


def row_layout(jobs: JobManager, job_id: bytes) -> tuple[int, int]:
    """A Python job's rows and rows per subtask; (0, 0) for a WebAssembly job or none."""
    job = jobs.jobs.get(job_id)
    manifest = job.manifest if job is not None else None
    if manifest is None:
        saved = jobs.store.job(job_id)
        try:
            manifest = None if saved is None else wire.open_self_signed(saved.manifest, JobManifest, "owner")
        except WireError:
            manifest = None
    return (0, 0) if manifest is None else (manifest.rows, manifest.rows_per_subtask)


def _label(envelope: bytes) -> str:
    try:
        return wire.open_self_signed(envelope, JobManifest, "owner").label
    except WireError:
        return ""
