"""The jobs this node owns: create them, run their replicas on the node's own slots, journal, resume.

Theory of operation: a job is a signed manifest, a Merkle commitment to its
inputs, and a ``JobOwner`` state machine (core/owner.py). ``JobManager`` is the
edge around them: it keeps the module and every input as blobs and the job in
the journal (store.py), so that after a crash ``resume`` rebuilds each running
job from its last snapshot and keeps every output already verified. Each
verdict is journalled the moment it is reached, before anything else is done
with it; the owner's snapshot is saved at most once a second (see SNAPSHOT_EVERY).

The node's own slots take replicas from its own jobs like any thief would (a
``StealRequest`` from the node itself, served from the hot end of the deque),
and run them through the ``Executor``. Peers will take replicas through the
steal protocol; a replica never goes to a node that already ran one of the
same subtask, so a job asking for more distinct executors than the mesh has
waits for peers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .blobs import BlobStore
from .core import wire
from .core.job import (
    ClaimReceived, Grant, Instruction, JobFinished, Progress, RenewLeases, ReplicaRef, StealRequest, SubtaskDecided,
)
from .core.manifest import InputCommitment, JobManifest, Replication, TaskLimits
from .core.owner import JobOwner
from .core.presence import next_seq
from .core.reputation import Reputation
from .core.result import ResultClaim
from .core.verify import Disputed, Verified
from .executor import Executor
from .identity import Identity
from .store import Store, VerifiedOutput

__all__ = ["JobManager", "JobOptions", "RunningJob"]

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000
# A snapshot costs time in proportion to the job (about 0.1 ms per subtask), so it is
# saved at most this often, while each verdict is journalled the moment it is reached.
# After a crash, verdicts newer than the snapshot are decided again, and the
# executors that ran them answer from their result caches instead of recomputing.
SNAPSHOT_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class JobOptions:
    limits: TaskLimits
    replication: Replication = Replication(replicas=2, quorum=2, max_replicas=5)
    entry: str = "run"
    nan_canonical: bool = False
    label: str = ""
    lease_seconds: float = 30.0
    max_attempts: int = 3
    expires_in_ms: int = WEEK_MS


@dataclass(slots=True)
class RunningJob:
    manifest: JobManifest
    envelope: bytes  # the signed manifest, as sent to executors
    commitment: InputCommitment
    owner: JobOwner
    # candidate outputs by subtask and hash (ours and the ones executors pushed) until a verdict picks one
    outputs: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    request_id: int = 0
    snapshot_at: float = 0.0  # monotonic time of the last saved snapshot

    @property
    def job_id(self) -> bytes:
        return self.manifest.job_id

    def progress(self) -> Progress:
        return self.owner.progress()


class JobManager:
    """Owns jobs: see the module docstring."""

    def __init__(self, identity: Identity, blobs: BlobStore, store: Store, executor: Executor, reputation: Reputation) -> None:
        self.identity = identity
        self.blobs = blobs
        self.store = store
        self.executor = executor
        self.reputation = reputation
        self.jobs: dict[bytes, RunningJob] = {}

    # --- creating and resuming ----------------------------------------------------------------

    def submit(self, module: bytes, inputs: Sequence[bytes], options: JobOptions, now_ms: int) -> RunningJob:
        """Sign, journal and start a job. Nothing is lost from here on, whatever happens to the process."""
        if not inputs:
            raise ValueError("a job needs at least one input")
        module_sha256 = self.blobs.put(module)
        for data in inputs:
            self.blobs.put(data)
        commitment = InputCommitment.of(inputs)
        manifest = JobManifest(
            job_id=os.urandom(16), owner=self.identity.peer_id, label=options.label[:200],
            module_sha256=module_sha256, module_size=len(module), entry=options.entry, limits=options.limits,
            nan_canonical=options.nan_canonical, replication=options.replication, subtask_count=len(inputs),
            inputs_root=commitment.root, created_ms=now_ms, expires_ms=now_ms + options.expires_in_ms,
        )  # fmt: skip
        envelope = wire.sign(manifest, self.identity.signing_key)
        owner = JobOwner(
            manifest.job_id, self.identity.peer_id, options.replication, len(inputs),
            lease_seconds=options.lease_seconds, max_attempts=options.max_attempts,
        )  # fmt: skip
        job = RunningJob(manifest, envelope, commitment, owner)
        self.store.add_job(manifest.job_id, envelope, self._snapshot(job))
        self.jobs[manifest.job_id] = job
        return job

    def resume(self) -> list[RunningJob]:
        """Rebuild every unfinished job from the journal (leased replicas go back to the deque)."""
        resumed = []
        for saved in self.store.jobs("running"):
            try:
                manifest = wire.open_self_signed(saved.manifest, JobManifest, "owner")
                assert saved.snapshot is not None
                commitment = InputCommitment.from_digests(
                    [bytes.fromhex(d) for d in saved.snapshot["inputs"]], saved.snapshot["sizes"]
                )
                owner = JobOwner.restore(saved.snapshot["owner"])
            except Exception as exc:  # a journal entry we cannot use must not stop the node
                log.error("cannot resume job %s: %s", saved.job_id.hex(), exc)
                continue
            job = RunningJob(manifest, saved.manifest, commitment, owner)
            self.jobs[manifest.job_id] = job
            resumed.append(job)
        return resumed

    def _snapshot(self, job: RunningJob) -> dict[str, Any]:
        return {
            "owner": job.owner.snapshot(),
            "inputs": [d.hex() for d in job.commitment.digests],
            "sizes": list(job.commitment.sizes),
        }

    # --- running on our own slots -------------------------------------------------------------

    def take(self, job: RunningJob, n: int, now: float) -> Grant | None:
        """Ask the job for up to ``n`` replicas for this node's own slots."""
        # request ids must keep growing across restarts: the job drops ids it has seen
        job.request_id = next_seq(job.request_id, _unix_ms())
        for instruction in job.owner.handle(StealRequest(self.identity.peer_id, n, job.request_id, now)):
            if isinstance(instruction, Grant):
                return instruction
        return None

    async def run_grant(self, job: RunningJob, grant: Grant) -> None:
        """Run the granted replicas here and feed the signed results back to the job.

        Our own leases are renewed while the replicas run, as any thief renews its own.
        """
        pending = list(grant.replicas)

        async def renew() -> None:
            while True:
                await trio.sleep(job.owner.lease_seconds / 3)
                self.apply(job, job.owner.handle(RenewLeases(self.identity.peer_id, tuple(pending), time.monotonic())))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew)
            await self._run_refs(job, pending)
            nursery.cancel_scope.cancel()

    async def _run_refs(self, job: RunningJob, pending: list[ReplicaRef]) -> None:
        for ref in list(pending):
            data = self.blobs.get(job.commitment.digests[ref.index])
            subtask = job.commitment.subtask(job.job_id, ref.index, ref.replica, data)
            manifest, checked = self.executor.check(job.envelope, wire.encode(subtask), _unix_ms())
            result = await self.executor.run(manifest, checked, outbox=False)  # we are the owner
            self.receive_claim(job, result.claim, result.output)
            pending.remove(ref)

    def receive_claim(self, job: RunningJob, claim: ResultClaim, output: bytes | None) -> list[Instruction]:
        """Feed one signed claim (ours or a peer's) to the job; returns what the job said, Acks included.

        The caller has checked the claim's signature and that ``output`` hashes to
        ``claim.output_sha256``.
        """
        if output is not None and claim.output_sha256 is not None:
            job.outputs.setdefault(claim.index, {})[claim.output_sha256] = output
        instructions = job.owner.handle(ClaimReceived(claim, time.monotonic(), self.reputation.barred()))
        self.apply(job, instructions)
        return instructions

    def apply(self, job: RunningJob, instructions: Sequence[object]) -> None:
        decided: list[VerifiedOutput] = []
        finished = False
        for instruction in instructions:
            if isinstance(instruction, SubtaskDecided):
                decided.append(self._journal_entry(job, instruction))
            elif isinstance(instruction, JobFinished):
                finished = True
        if decided:
            self.store.record_outputs(job.job_id, decided)
        now = time.monotonic()
        if finished or (decided and now - job.snapshot_at >= SNAPSHOT_EVERY):
            self.store.save_snapshot(job.job_id, self._snapshot(job), "finished" if finished else "running")
            job.snapshot_at = now

    def flush(self) -> None:
        """Save every running job's state now (the node calls this when it stops)."""
        for job in self.jobs.values():
            if not job.owner.finished:
                self.store.save_snapshot(job.job_id, self._snapshot(job))

    def _journal_entry(self, job: RunningJob, decided: SubtaskDecided) -> VerifiedOutput:
        outcome = decided.outcome
        if isinstance(outcome, Verified):
            self.reputation.record_verdict(outcome)
            executors = [str(p) for p in outcome.counted]
            candidates = job.outputs.pop(decided.index, {})
            if outcome.status == "ok":
                assert outcome.output_sha256 is not None
                output = candidates.get(outcome.output_sha256)
                return VerifiedOutput(decided.index, "ok", output, {"executors": executors})
            return VerifiedOutput(decided.index, outcome.status, None, {"executors": executors})
        job.outputs.pop(decided.index, None)
        if isinstance(outcome, Disputed):
            return VerifiedOutput(decided.index, "disputed", None, {"candidates": repr(outcome)[:2000]})
        return VerifiedOutput(decided.index, outcome.code, None, {"message": outcome.message})


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000
