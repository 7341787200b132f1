"""The jobs this node owns: create them, run their replicas on the node's own slots, journal, resume.

Theory of operation: a job is a signed manifest, a Merkle commitment to its
inputs, and a ``JobOwner`` state machine (core/owner.py). ``JobManager`` is the
edge around them: it keeps the module and large inputs as blobs, and the job
with its small inputs in the journal (store.py), so that after a crash
``resume`` rebuilds each running job from its last snapshot, then takes every
verdict journalled since as decided: nothing verified is run again. Each
verdict is journalled the moment it is reached, before any executor hears its
claim was accepted; the owner's snapshot is saved at most once a second (see
SNAPSHOT_EVERY).

The node's own slots take replicas from its own jobs like any thief would (a
``StealRequest`` from the node itself, served from the hot end of the deque),
and run them through the ``Executor``. Peers take replicas through the steal
protocol; a replica never goes to a node that already ran one of the same
subtask, so a job asking for more distinct executors than the mesh has waits
for peers. ``RunningJob`` is also the handle a trio program gets from
``MeshNode.submit``: ``results()``, ``wait()``, ``cancel()``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .blobs import BlobStore
from .core import wire
from .core.job import (
    ClaimReceived, Failed, Grant, Instruction, JobFinished, Outcome, Progress, ReleaseReplicas, RenewLeases, ReplicaLost, StealRequest, SubtaskDecided,
)
from .core.manifest import INLINE_INPUT_MAX, InputCommitment, JobManifest, Replication, TaskLimits
from .core.owner import JobOwner
from .core.presence import next_seq
from .core.reputation import Reputation
from .core.peer_id import PeerId
from .core.result import ResultClaim
from .core.verify import Candidate, Disputed, Verified
from .errors import MeshError
from .executor import Executor
from .identity import Identity
from .store import Store, VerifiedOutput

__all__ = ["JobManager", "JobOptions", "JobResult", "RunningJob"]

Snapshot = tuple[dict[str, Any] | None, str]  # the owner's state (None: unchanged) and the job's state

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000
# A snapshot costs time on the event loop in proportion to the job (about 25 us per
# subtask), so it is saved at most every SNAPSHOT_EVERY seconds, and never more than
# SNAPSHOT_SHARE of the time, while each verdict is journalled the moment it is reached.
# After a crash, verdicts newer than the snapshot are settled from the journal; the
# claims of undecided subtasks newer than it are asked for again (executors answer
# from their result caches).
SNAPSHOT_EVERY = 1.0
SNAPSHOT_SHARE = 0.02


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


@dataclass(frozen=True, slots=True)
class JobResult:
    """One decided subtask, as ``RunningJob.results`` yields it.

    Attributes:
        status: "ok", the failure code its executors agreed on (or that ended its
            attempts), or "disputed" when they never reached a quorum.
        output: the verified output (status "ok" only).
        executors: the peer IDs whose agreeing results were accepted.
        message: what went wrong, for any status but "ok".
        candidates: for "disputed": each output hash (hex, or the failure code) and who reported it.
    """

    index: int
    status: str
    output: bytes | None
    executors: tuple[str, ...] = ()
    message: str = ""
    candidates: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, saved: VerifiedOutput) -> JobResult:
        d = saved.detail
        candidates = tuple((str(c["sha256"] or c["status"]), tuple(c["executors"])) for c in d.get("candidates", ()))
        return cls(saved.index, saved.status, saved.output, tuple(d.get("executors", ())), str(d.get("message", "")), candidates)


@dataclass(slots=True)
class RunningJob:
    """A job this node owns. From a trio program: ``async for r in job.results()``, ``await job.wait()``,
    ``await job.cancel()``."""

    manifest: JobManifest
    envelope: bytes  # the signed manifest, as sent to executors
    commitment: InputCommitment
    owner: JobOwner
    manager: JobManager
    # candidate outputs by subtask and hash (ours and the ones executors pushed) until a verdict picks one
    outputs: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    decided: list[int] = field(default_factory=list)  # subtask indices in the order they were decided
    refusals: dict[str, str] = field(default_factory=dict)  # peer -> why it refused this job's work
    messages: dict[int, str] = field(default_factory=dict)  # our own runs' failure messages, until decided
    request_id: int = 0
    snapshot_at: float = 0.0  # monotonic time of the last saved snapshot
    snapshot_cost: float = 0.0  # seconds the last one took to build
    changed: trio.Event = field(default_factory=trio.Event)  # set (and replaced) on every decision
    cancelled: bool = False  # cancelled, and that journalled

    @property
    def job_id(self) -> bytes:
        return self.manifest.job_id

    def progress(self) -> Progress:
        return self.owner.progress()

    @property
    def done(self) -> bool:
        """Finished (every verdict journalled, not only reached) or cancelled."""
        if self.cancelled:
            return True
        p = self.owner.progress()
        return self.owner.finished and len(self.decided) == p.verified + p.failed + p.disputed

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def results(self) -> AsyncIterator[JobResult]:
        """Each subtask's result as soon as it is decided (verified, failed or disputed), in that order.

        Ends when the job has finished or was cancelled.
        """
        seen = 0
        while True:
            changed = self.changed
            while seen < len(self.decided):
                saved = self.manager.store.output(self.job_id, self.decided[seen])
                seen += 1
                if saved is not None:
                    yield JobResult.of(saved)
            if self.done:
                return
            await changed.wait()

    async def wait(self) -> list[JobResult]:
        """Wait for the job to end; every decided subtask's result, in input order."""
        while not self.done:
            await self.changed.wait()
        return [JobResult.of(o) for o in self.manager.store.outputs(self.job_id)]

    async def cancel(self) -> None:
        """Stop the job: no more work is handed out, and results still coming are ignored."""
        if not self.owner.finished:
            self.owner.cancel()  # only running jobs are restored: the state is all that changes
            await trio.to_thread.run_sync(self.manager.store.save_snapshot, self.job_id, None, "cancelled")
            self.cancelled = True
            self.notify()


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

    def submit(self, module: bytes, inputs: Iterable[bytes], options: JobOptions, now_ms: int) -> RunningJob:
        """Sign, journal and start a job. Nothing is lost from here on, whatever happens to the process."""
        job = self.create(module, inputs, options, now_ms)
        self.start(job)
        return job

    def create(self, module: bytes, inputs: Iterable[bytes], options: JobOptions, now_ms: int) -> RunningJob:
        """Sign and journal a job without starting it: the slow part of ``submit`` (it hashes and stores
        every input), safe to call from a worker thread. A crash after it returns resumes the job."""
        module_sha256 = self.blobs.put(module)
        digests: list[bytes] = []
        sizes: list[int] = []
        small: list[tuple[int, bytes]] = []
        for data in inputs:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"every input must be bytes, not {type(data).__name__}")
            data = bytes(data)
            if len(data) <= INLINE_INPUT_MAX:  # travels inline: kept in the journal, not a file of its own
                digests.append(hashlib.sha256(data).digest())
                small.append((len(sizes), data))
            else:
                digests.append(self.blobs.put(data))
            sizes.append(len(data))
        if not digests:
            raise ValueError("a job needs at least one input")
        commitment = InputCommitment.from_digests(digests, sizes)
        manifest = JobManifest(
            job_id=os.urandom(16), owner=self.identity.peer_id, label=options.label[:200],
            module_sha256=module_sha256, module_size=len(module), entry=options.entry, limits=options.limits,
            nan_canonical=options.nan_canonical, replication=options.replication, subtask_count=len(digests),
            inputs_root=commitment.root, created_ms=now_ms, expires_ms=now_ms + options.expires_in_ms,
        )  # fmt: skip
        envelope = wire.sign(manifest, self.identity.signing_key)
        owner = JobOwner(
            manifest.job_id, self.identity.peer_id, options.replication, len(digests),
            lease_seconds=options.lease_seconds, max_attempts=options.max_attempts,
        )  # fmt: skip
        job = RunningJob(manifest, envelope, commitment, owner, self)
        self.store.add_job(manifest.job_id, envelope, self.snapshot(job), inputs=small)
        job.snapshot_at = time.monotonic()
        return job

    def start(self, job: RunningJob) -> None:
        self.jobs[job.job_id] = job

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
            job = RunningJob(manifest, saved.manifest, commitment, owner, self)
            for o in self.store.outputs(saved.job_id):
                # verdicts reached after the last snapshot are in the journal: none is decided twice
                owner.settle(o.index, _outcome_of(o))
                job.decided.append(o.index)
            if owner.finished:  # the last verdicts were journalled, the job's end was not
                self.store.save_snapshot(job.job_id, self.snapshot(job), "finished")
            self.jobs[manifest.job_id] = job
            resumed.append(job)
        return resumed

    def snapshot(self, job: RunningJob) -> dict[str, Any]:
        return {
            "owner": job.owner.snapshot(),
            "inputs": [d.hex() for d in job.commitment.digests],
            "sizes": list(job.commitment.sizes),
        }

    # --- running on our own slots -------------------------------------------------------------

    def inline_inputs(self, job: RunningJob, indices: list[int]) -> dict[int, bytes]:
        """The inputs small enough to travel inside their subtasks, by index (from the journal,
        or from the blob store for jobs submitted before inputs were journalled)."""
        small = [i for i in indices if job.commitment.sizes[i] <= INLINE_INPUT_MAX]
        found = self.store.inputs(job.job_id, small)
        for i in small:
            if i not in found:
                data = self.blobs.get(job.commitment.digests[i])
                if data is not None:
                    found[i] = data
        return found

    def take(self, job: RunningJob, n: int, now: float) -> Grant | None:
        """Ask the job for up to ``n`` replicas for this node's own slots."""
        # request ids must keep growing across restarts: the job drops ids it has seen
        job.request_id = next_seq(job.request_id, _unix_ms())
        for instruction in job.owner.handle(StealRequest(self.identity.peer_id, n, job.request_id, now)):
            if isinstance(instruction, Grant):
                return instruction
        return None

    async def run_grant(self, job: RunningJob, grant: Grant) -> None:
        """Run the granted replicas here, as one batch, and feed the results back to the job.

        Our own leases are renewed while the batch runs, as any thief renews its own.
        """
        refs = grant.replicas

        async def renew() -> None:
            while True:
                await trio.sleep(job.owner.lease_seconds / 3)
                self.apply(job, job.owner.handle(RenewLeases(self.identity.peer_id, refs, time.monotonic())))

        problem: MeshError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew)
            inputs = await trio.to_thread.run_sync(self.inline_inputs, job, [ref.index for ref in refs])
            # our own subtasks are not checked against the manifest: no Merkle proofs to build
            subtasks = [job.commitment.subtask(job.job_id, r.index, r.replica, inputs.get(r.index), proof=False) for r in refs]
            try:
                # our own subtasks need no checking, and our own claims no signature: nobody else sees them
                results = await self.executor.run_batch(job.manifest, subtasks, outbox=False, sign=False, cache=False)
            except MeshError as exc:  # caught here: a nursery would wrap it in an exception group
                problem = exc
            nursery.cancel_scope.cancel()
        if problem is not None:
            self.apply(job, job.owner.handle(ReleaseReplicas(self.identity.peer_id, refs, time.monotonic())))
            raise problem
        for r in results:
            if r.message:
                job.messages[r.claim.index] = r.message
        await self.receive_claims(job, [(r.claim, r.output) for r in results])

    async def receive_claim(self, job: RunningJob, claim: ResultClaim, output: bytes | None) -> list[Instruction]:
        return await self.receive_claims(job, [(claim, output)])

    async def receive_claims(self, job: RunningJob, claims: Sequence[tuple[ResultClaim, bytes | None]]) -> list[Instruction]:
        """Feed signed claims (ours or a peer's) to the job; returns what the job said, Acks included.

        The caller has checked each claim's signature and that its output hashes
        to ``claim.output_sha256``. The verdicts reached are journalled in one
        transaction, in a worker thread, before this returns (and so before any
        executor hears its claim was accepted).
        """
        instructions: list[Instruction] = []
        barred = self.reputation.barred()
        now = time.monotonic()
        for claim, output in claims:
            if output is not None and claim.output_sha256 is not None and job.owner.outcome(claim.index) is None:
                job.outputs.setdefault(claim.index, {})[claim.output_sha256] = output
            instructions += job.owner.handle(ClaimReceived(claim, now, barred))
        decided, snapshot = self._consume(job, instructions)
        if decided or snapshot is not None:
            # outputs can be megabytes and a commit may checkpoint the WAL: not on the event loop
            await trio.to_thread.run_sync(self._journal, job.job_id, decided, snapshot)
        self._decided(job, decided, snapshot)
        return instructions

    def apply(self, job: RunningJob, instructions: Sequence[object]) -> None:
        """Carry out what the job said (from a tick, a renewal, a departure): journal verdicts, feed reputation."""
        decided, snapshot = self._consume(job, instructions)
        self._journal(job.job_id, decided, snapshot)
        self._decided(job, decided, snapshot)

    def _consume(self, job: RunningJob, instructions: Sequence[object]) -> tuple[list[VerifiedOutput], Snapshot | None]:
        """The verdicts to journal and the snapshot to save (if one is due), from the job's instructions."""
        decided: list[VerifiedOutput] = []
        finished = False
        for instruction in instructions:
            if isinstance(instruction, SubtaskDecided):
                decided.append(self._journal_entry(job, instruction))
            elif isinstance(instruction, JobFinished):
                finished = True
            elif isinstance(instruction, ReplicaLost):
                ref, why = instruction.replica, instruction.reason.replace("_", " ")
                log.info("job %s: %s lost replica %d.%d (%s)", job.job_id.hex()[:12], instruction.holder, ref.index, ref.replica, why)
                if instruction.credible and instruction.holder != self.identity.peer_id:
                    self.reputation.record_failure(instruction.holder)
        now = time.monotonic()
        if finished:  # only running jobs are ever restored: the state is all that changes
            return decided, (None, "finished")
        if decided and now - job.snapshot_at >= max(SNAPSHOT_EVERY, job.snapshot_cost / SNAPSHOT_SHARE):
            snapshot = self.snapshot(job)
            job.snapshot_at = time.monotonic()
            job.snapshot_cost = job.snapshot_at - now
            return decided, (snapshot, "running")
        return decided, None

    def _journal(self, job_id: bytes, decided: list[VerifiedOutput], snapshot: Snapshot | None) -> None:
        if decided:
            self.store.record_outputs(job_id, decided)
        if snapshot is not None:
            self.store.save_snapshot(job_id, *snapshot)

    @staticmethod
    def _decided(job: RunningJob, decided: list[VerifiedOutput], snapshot: Snapshot | None) -> None:
        if decided:
            job.decided += [d.index for d in decided]
        if decided or snapshot is not None:
            job.notify()

    def flush(self) -> None:
        """Save every running job's state now (the node calls this when it stops)."""
        for job in self.jobs.values():
            if not job.owner.finished:
                self.store.save_snapshot(job.job_id, self.snapshot(job))

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
            message = job.messages.pop(decided.index, "") or f"{len(executors)} executors agree it fails this way"
            return VerifiedOutput(decided.index, outcome.status, None, {"executors": executors, "message": message})
        job.outputs.pop(decided.index, None)
        job.messages.pop(decided.index, None)
        if isinstance(outcome, Disputed):
            reported = [
                {"status": c.status, "sha256": None if c.output_sha256 is None else c.output_sha256.hex(),
                 "executors": [str(p) for p in c.executors]}
                for c in outcome.candidates
            ]  # fmt: skip
            reporters = sum(len(c.executors) for c in outcome.candidates)
            message = f"no quorum: {len(reported)} different results from {reporters} executors"
            return VerifiedOutput(decided.index, "disputed", None, {"candidates": reported, "message": message})
        return VerifiedOutput(decided.index, outcome.code, None, {"message": outcome.message})


def _outcome_of(saved: VerifiedOutput) -> Outcome:
    """A journalled verdict as the job's state machine knows it."""
    executors = tuple(PeerId.from_base58(p) for p in saved.detail.get("executors", ()))
    if saved.status == "disputed":
        return Disputed(tuple(
            Candidate(c["status"], None if c["sha256"] is None else bytes.fromhex(c["sha256"]),
                      tuple(PeerId.from_base58(p) for p in c["executors"]))
            for c in saved.detail.get("candidates", ())
        ))  # fmt: skip
    if not executors:  # out of attempts: nobody answered
        return Failed(saved.status, str(saved.detail.get("message", "")))
    sha = None if saved.output is None else hashlib.sha256(saved.output).digest()
    return Verified(saved.status, sha, executors, executors, (), (), (), ())


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000
