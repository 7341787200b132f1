"""The jobs this node owns: create them, run their replicas on the node's own slots, journal, resume.

Theory of operation: a job is a signed manifest, a Merkle commitment to its
inputs, and a ``JobOwner`` state machine (core/owner.py). ``JobManager`` is the
edge around them: it keeps the module and large inputs as blobs, and the job
with every input's hash and size, its small inputs and its Merkle tree in the
journal (storage/journal.py). Inputs stream in: ``create`` journals them in batches as
it reads them, so a million-subtask job never sits in memory.

Journal first: each verdict is journalled the moment it is reached, before any
executor hears its claim was accepted, and what a job reports as decided
(``progress``, ``results``) is what the journal holds. The owner's snapshot -
the work in flight, not the job - is saved at most once a second. After a
crash ``resume`` rebuilds each running job from its last snapshot and every
verdict the journal holds (``JobOwner.restore``): nothing journalled runs
again, whatever restarted when.

When the journal refuses a write (a full disk, an I/O error) the job that
needed it is *paused*: it hands out no work and takes no claims, and the
verdicts it had reached wait in memory; ``retry_journal`` writes them once the
journal takes writes again, and the job carries on by itself. A job whose
journal entry cannot be read is *damaged*: it is left alone (and listed, with
what to do), while the node runs every other job.

The node's own slots take replicas from its own jobs like any thief would (a
``StealRequest`` from the node itself), and run them through the ``Executor``.
Peers take replicas through the steal protocol; a replica never goes to a node
that already ran one of the same subtask, so a job asking for more distinct
executors than the mesh has waits for peers. ``RunningJob`` is also the handle
a trio program gets from ``MeshNode.submit``: ``results()``, ``wait()``,
``cancel()``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, assert_never

import trio

from ..core import wire
from ..core.adaptive import TrustBook
from ..core.credit import grants
from ..core.job import (
    Ack, Cancel, ClaimReceived, Event, Failed, Grant, JobFinished, Progress, ReleaseReplicas, RenewLeases, Renewed,
    Reopen, Reopened, ReplicaLost, ReplicaRef, ReplicasAdded, Revoke, StealRequest, SubtaskDecided, Transferred,
)  # fmt: skip
from ..core.manifest import INLINE_INPUT_MAX, WASM_RUNTIME, JobManifest, JobOptions, Replication, Subtask, TaskLimits
from ..core.merkle import MerkleTree, leaf_hash, tree_levels
from ..core.output_codec import PLAIN, Packed
from ..core.owner import JobOwner, status_kind
from ..core.thief import CHUNK_BUDGET
from ..core.peer_id import PeerId
from ..core.presence import next_seq
from ..core.python_rows import batch_rows, check_row, is_script, row_records
from ..core.reputation import Reputation
from ..core.result import ResultClaim
from ..core.verify import Disputed, Verified
from ..errors import JournalError, MeshError, WireError
from ..sandbox.python_runtime import RUNTIME_ID
from ..storage.blobs import BlobStore
from ..storage.identity import Identity
from ..storage.journal import InputRow, Store, VerifiedOutput
from .executing import Executor, RunResult
from .job_stats import JobStats

__all__ = ["Carried", "JobManager", "JobResult", "RevocationSender", "RunningJob"]

Snapshot = tuple[dict[str, Any] | None, str]  # the owner's state (None: unchanged) and the job's state

log = logging.getLogger(__name__)

# The snapshot holds the work in flight, so it is small, but it is still saved at
# most every SNAPSHOT_EVERY seconds, and never more than SNAPSHOT_SHARE of the time:
# each verdict is journalled the moment it is reached, and correctness needs no more.
SNAPSHOT_EVERY = 1.0
SNAPSHOT_SHARE = 0.02
# Inputs are journalled this many at a time (or INGEST_BYTES, whichever comes
# first) while a job comes in: bounded memory, and short transactions that let
# the verdicts of running jobs through in between.
INGEST_ROWS: Final = 8192
INGEST_BYTES: Final = 16 << 20
RESULTS_READ: Final = 64  # decided outputs read in one trip to a worker thread by ``RunningJob.results`` ...
RESULTS_READ_BYTES: Final = 16 << 20  # ... or fewer, once they hold this many bytes

_KIND_NAMES: Final = ("", "verified", "failed", "disputed")
HOLD_RUNS: Final = 4  # runs' time limits one node may keep one replica for (``max_hold``)


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
        verified_by: "quorum", "single+spotcheck" or "single" (``core/job.py``); "" when nothing was verified.
        revised: it replaces an earlier result of the subtask, accepted on the word of an executor since
            caught lying (adaptive replication).
    """

    index: int
    status: str
    output: bytes | None
    executors: tuple[str, ...] = ()
    message: str = ""
    candidates: tuple[tuple[str, tuple[str, ...]], ...] = ()
    verified_by: str = ""
    revised: bool = False

    @classmethod
    def of(cls, saved: VerifiedOutput) -> JobResult:
        d = saved.detail
        candidates = tuple((str(c["sha256"] or c["status"]), tuple(c["executors"])) for c in d.get("candidates", ()))
        return cls(saved.index, saved.status, saved.output, tuple(d.get("executors", ())), str(d.get("message", "")),
                   candidates, str(d.get("verified_by", "")), bool(d.get("revised", False)))  # fmt: skip


@dataclass(slots=True)
class Carried:
    """What a job's state machine said that answers a request; the driver carried out the rest."""

    grants: list[Grant] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    transferred: list[Transferred] = field(default_factory=list)


# Tell ``holder`` to stop these replicas of a job: (holder, job ID, replicas, reason). It must not block.
RevocationSender = Callable[[PeerId, bytes, tuple[ReplicaRef, ...], str], None]


@dataclass(slots=True)
class RunningJob:
    """A job this node owns. From a trio program: ``async for r in job.results()``, ``await job.wait()``,
    ``await job.cancel()``."""

    manifest: JobManifest
    envelope: bytes  # the signed manifest, as sent to executors
    tree: MerkleTree  # over the inputs: each subtask's proof
    owner: JobOwner
    manager: JobManager
    # candidate outputs by subtask and hash (ours and the ones executors pushed) until a verdict picks one
    outputs: dict[int, dict[bytes, Packed]] = field(default_factory=dict)
    decided: array[int] = field(default_factory=lambda: array("q"))  # journalled verdicts' indices, in that order
    journalled: Counter[str] = field(default_factory=Counter)  # journalled verdicts: verified, failed, disputed
    unjournalled: list[VerifiedOutput] = field(default_factory=list)  # verdicts the journal refused, to write again
    paused: str = ""  # why the job is paused (the journal refused a write), or ""
    refusals: dict[str, str] = field(default_factory=dict)  # peer -> why it refused this job's work
    messages: dict[int, str] = field(default_factory=dict)  # our own runs' failure messages, until decided
    request_id: int = 0
    snapshot_at: float = 0.0  # monotonic time of the last saved snapshot
    snapshot_cost: float = 0.0  # seconds the last one took to build
    changed: trio.Event = field(default_factory=trio.Event)  # set (and replaced) on every decision
    cancelled: bool = False  # cancelled, and that journalled
    stats: JobStats = field(default_factory=JobStats)  # what it cost and who ran it, for its summary
    revised: int = 0  # subtasks reopened: each has an old verdict in ``decided`` and a new one to come
    rechecking: set[int] = field(default_factory=set)  # subtasks of a finished job run again (``recheck``)
    module_sent: set[PeerId] = field(default_factory=set)  # thieves handed the module in a grant (job_messages)

    @property
    def job_id(self) -> bytes:
        return self.manifest.job_id

    def progress(self) -> Progress:
        """The state machine's progress, with only journalled verdicts counted as decided."""
        p = self.owner.progress()
        j = self.journalled
        return Progress(p.total, j["verified"], j["failed"], j["disputed"], p.running, p.queued, p.working)

    @property
    def done(self) -> bool:
        """Finished (every verdict journalled, not only reached) or cancelled."""
        return self.cancelled or (self.owner.finished and len(self.decided) - self.revised == self.owner.subtask_count)

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
                # outputs can be megabytes to read and inflate: not on the event loop
                indices = self.decided[seen : seen + RESULTS_READ]
                read = await trio.to_thread.run_sync(self.manager.store.outputs_of, self.job_id, indices, RESULTS_READ_BYTES)
                seen += len(read)
                for saved in read:
                    if saved is not None:
                        yield JobResult.of(saved)
            if self.done:
                return
            await changed.wait()

    def rows_of(self, result: JobResult) -> list[dict[str, Any]]:
        """A Python job's result as one record per row (``index``, ``status``, ``output`` or ``error``,
        ``log``, ``executors``), as ``meshnode results`` prints them."""
        m = self.manifest
        if not m.rows_per_subtask:
            raise ValueError("not a Python job: its results are not rows")
        ok = result.status == "ok"
        error = None if ok else {"code": result.status, "message": result.message}
        return row_records(result.index, m.rows, m.rows_per_subtask, result.output if ok else None, error,
                           {"executors": list(result.executors)})  # fmt: skip

    async def wait(self) -> list[JobResult]:
        """Wait for the job to end; every decided subtask's result, in input order."""
        while not self.done:
            await self.changed.wait()
        outputs = await trio.to_thread.run_sync(self.manager.store.outputs, self.job_id)  # can be gigabytes
        return [JobResult.of(o) for o in outputs]

    async def cancel(self) -> None:
        """Stop the job: no more work is handed out, and results still coming are ignored.

        Raises:
            JournalError: the journal could not record it (the job stays stopped until the node restarts).
        """
        await self.manager.cancel(self)


ROWS_ARE_FOR_SCRIPTS: Final = "rows_per_subtask is for a Python script's job, and a script's job needs it"


class JobManager:
    """Owns jobs: see the module docstring."""

    def __init__(
        self, identity: Identity, blobs: BlobStore, store: Store, executor: Executor, reputation: Reputation,
        trust: TrustBook | None = None,
    ) -> None:  # fmt: skip
        self.identity = identity
        self.blobs = blobs
        self.store = store
        self.executor = executor
        self.metrics = executor.metrics
        self.reputation = reputation
        # adaptive replication: who may run a subtask alone (fed every verdict, on the monotonic clock), and
        # the draws of spot checks, which no executor may predict
        self.trust = trust if trust is not None else TrustBook()
        self.draw = random.SystemRandom().random
        self.standing_changed = False  # verdicts changed reputations or trust since they were last saved
        self.jobs: dict[bytes, RunningJob] = {}
        self.damaged: dict[bytes, str] = {}  # jobs whose journal entry cannot be used: why
        self.trouble: JournalError | None = None  # the write that paused a job, until the journal takes writes again
        # Set by the node: how revocations reach their holders, and how idle slots hear of new work.
        self.revocations: RevocationSender = lambda holder, job_id, replicas, reason: None
        self.work_added: Callable[[], None] = lambda: None

    # --- creating and resuming ----------------------------------------------------------------

    def submit(self, module: bytes, inputs: Iterable[bytes], options: JobOptions, now_ms: int) -> RunningJob:
        """Sign, journal and start a job. Nothing is lost from here on, whatever happens to the process."""
        job = self.create(module, inputs, options, now_ms)
        self.start(job)
        return job

    def create(self, module: bytes, inputs: Iterable[bytes], options: JobOptions, now_ms: int) -> RunningJob:
        """Sign and journal a job without starting it, reading ``inputs`` as they come.

        The slow part of ``submit`` (it hashes and journals every input), made to run in
        a worker thread. A crash before it returns leaves nothing behind (the half-written
        job is dropped at the next start); a crash after it resumes the job.

        Raises:
            ValueError: no inputs.
            TypeError: an input that is not bytes.
            JournalError: the journal refused the job (a full disk, say).
            Exception: whatever reading ``inputs`` raised.
        """
        if self.trouble is not None:  # a full disk: new work would only make it worse
            raise JournalError(f"no new jobs until the journal takes writes again: {self.trouble}", self.trouble.kind)
        job_id = os.urandom(16)
        runtime = RUNTIME_ID if options.rows_per_subtask else WASM_RUNTIME
        if (runtime == RUNTIME_ID) != is_script(module):
            raise ValueError(ROWS_ARE_FOR_SCRIPTS)
        rows = _Counted(inputs, check=check_row if options.rows_per_subtask else None)
        if options.rows_per_subtask:  # a Python job: the owner groups its rows into subtasks
            inputs = batch_rows(rows, options.rows_per_subtask)
        module_sha256 = self._put_blob(module)
        self.store.begin_job(job_id)
        try:
            count, leaves = self._ingest(job_id, inputs)
            levels = tree_levels(leaves)
            del leaves
            # held without its leaves (half its size): a proof reads the one leaf it needs from the journal
            tree = MerkleTree.from_levels(levels[1:], count) if count > 1 else MerkleTree.from_levels(levels)
            manifest = JobManifest(
                job_id=job_id, owner=self.identity.peer_id, label=options.label[:200],
                module_sha256=module_sha256, module_size=len(module), entry=options.entry,
                runtime=runtime, rows=rows.count, rows_per_subtask=options.rows_per_subtask, limits=options.limits,
                nan_canonical=options.nan_canonical, replication=options.replication, subtask_count=count,
                inputs_root=tree.root, created_ms=now_ms, expires_ms=now_ms + options.expires_in_ms,
            )  # fmt: skip
            envelope = wire.sign(manifest, self.identity.signing_key)
            adaptive = options.verify == "adaptive"
            owner = JobOwner(
                job_id, self.identity.peer_id, options.replication, count,
                lease_seconds=options.lease_seconds, max_attempts=options.max_attempts,
                max_hold=max_hold(options), trust=self.trust if adaptive else None, draw=self.draw if adaptive else None,
            )  # fmt: skip
            self.store.finish_job(job_id, envelope, count, levels, owner.snapshot())
            del levels  # the leaves stay in the journal only
        except BaseException:
            try:
                self.store.drop_job(job_id)
            except JournalError:
                pass  # dropped at the next start, with every job still ingesting
            raise
        job = RunningJob(manifest, envelope, tree, owner, self)
        job.snapshot_at = time.monotonic()
        return job

    def _ingest(self, job_id: bytes, inputs: Iterable[bytes]) -> tuple[int, bytearray]:
        """Journal ``inputs`` in bounded batches; how many there were, and their Merkle leaves."""
        leaves = bytearray()
        batch: list[tuple[int, bytes, int, bytes | None]] = []
        held = 0
        count = 0
        for data in inputs:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"every input must be bytes, not {type(data).__name__}")
            data = bytes(data)
            digest = hashlib.sha256(data).digest()
            if len(data) > INLINE_INPUT_MAX:  # too large to travel inline: a blob of its own, fetched by hash
                self._put_blob(data)
                batch.append((count, digest, len(data), None))
            else:
                batch.append((count, digest, len(data), data))
                held += len(data)
            leaves += leaf_hash(digest, len(data))
            count += 1
            if len(batch) >= INGEST_ROWS or held >= INGEST_BYTES:
                self.store.add_inputs(job_id, batch)
                batch, held = [], 0
                _stop_if_cancelled()
        if batch:
            self.store.add_inputs(job_id, batch)
        if not count:
            raise ValueError("a job needs at least one input")
        return count, leaves

    def _put_blob(self, data: bytes) -> bytes:
        """Keep ``data`` in the blob store; a disk that refuses it is the journal's problem, told the same way."""
        try:
            return self.blobs.put(data)
        except OSError as exc:
            kind = "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io"
            raise JournalError(f"the blob store {self.blobs.root} cannot take a job's files: {exc.strerror or exc}", kind) from None

    def start(self, job: RunningJob) -> None:
        self.jobs[job.job_id] = job

    def resume(self) -> list[RunningJob]:
        """Rebuild every unfinished job from the journal; a job whose entry cannot be used is set aside."""
        for job_id in self.store.drop_ingesting():
            log.warning("dropped job %s: the node stopped while it was being submitted", job_id.hex(),
                        extra={"event": "job_dropped", "job": job_id.hex(), "reason": "ingesting"})  # fmt: skip
        resumed = []
        for row in self.store.jobs("running"):
            try:
                job = self._resume(row.job_id, row.manifest)
            except (JournalError, ValueError, WireError) as exc:  # one bad row must not stop the node
                if isinstance(exc, JournalError) and exc.kind != "damaged":
                    raise
                reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                self.damaged[row.job_id] = reason
                log.error("job %s is damaged and left alone: %s (its journalled results can still be read: "
                          "meshnode results %s)", row.job_id.hex(), reason, row.job_id.hex(),
                          extra={"event": "job_damaged", "job": row.job_id.hex(), "reason": reason})  # fmt: skip
                continue
            self.jobs[job.job_id] = job
            resumed.append(job)
        return resumed

    def _resume(self, job_id: bytes, envelope: bytes) -> RunningJob:
        manifest = wire.open_self_signed(envelope, JobManifest, "owner")
        if manifest.job_id != job_id or manifest.owner != self.identity.peer_id:
            raise ValueError("its manifest is for another job or owner")
        snapshot = self.store.snapshot(job_id)
        if snapshot is None:
            raise ValueError("it has no saved state")
        count = manifest.subtask_count
        if count > 1:
            tree = MerkleTree.from_levels(self.store.tree(job_id, leaves=False), count)
        else:
            tree = MerkleTree.from_levels(self.store.tree(job_id))
        if tree.root != manifest.inputs_root or len(tree) != manifest.subtask_count:
            raise ValueError("its input tree does not match its manifest")
        decided: array[int] = array("q")
        journalled: Counter[str] = Counter()

        def verdicts() -> Iterator[tuple[int, str]]:  # one pass over the journal, however large the job
            for index, status in self.store.verdicts(job_id):
                decided.append(index)
                journalled[_KIND_NAMES[status_kind(status)]] += 1
                yield index, status

        owner = JobOwner.restore(snapshot, verdicts(), trust=self.trust, draw=self.draw)
        if owner.job_id != job_id or owner.subtask_count != manifest.subtask_count:
            raise ValueError("its saved state is for another job")
        job = RunningJob(manifest, envelope, tree, owner, self, decided=decided, journalled=journalled)
        # lone results being decided again when the node stopped: their new verdicts replace them (and withdraw
        # the lie's credit) even where the restored snapshot predates the reopening
        job.rechecking.update(self.store.rechecking(job_id))
        if owner.finished:  # the last verdicts were journalled, the job's end was not
            self.store.save_snapshot(job_id, None, "finished")
        return job

    # --- running on our own slots -------------------------------------------------------------

    def subtasks(self, job: RunningJob, refs: Sequence[ReplicaRef], *, own: bool = False) -> list[Subtask]:
        """The subtasks for ``refs``, as the journal holds their inputs.

        For thieves (``own=False``) a large input travels by hash and every subtask
        carries its Merkle proof; for the node's own slots (``own=True``) every input
        is inline and there is no proof to build, since nobody checks it.

        Raises:
            JournalError: the journal cannot be read, or lacks an input.
        """
        wanted = {ref.index for ref in refs}
        if not own:  # a proof needs the leaf beside its own: the hash and size of that input
            wanted |= {ref.index ^ 1 for ref in refs if ref.index ^ 1 < len(job.tree)}
        rows = self.store.input_rows(job.job_id, sorted(wanted))
        if len(rows) != len(wanted):
            missing = min(wanted - set(rows))
            raise JournalError(f"the journal lacks input {missing} of job {job.job_id.hex()}", "damaged")
        out = []
        for ref in refs:
            row = rows[ref.index]
            data = row.data if row.data is not None or not own else self._blob_input(row)
            beside = rows.get(ref.index ^ 1)
            proof = () if own else job.tree.proof(ref.index, None if beside is None else leaf_hash(beside.sha256, beside.size))
            out.append(Subtask(job_id=job.job_id, index=ref.index, replica=ref.replica, input_sha256=row.sha256,
                               input_size=row.size, input=data, proof=proof))  # fmt: skip
        return out

    def _blob_input(self, row: InputRow) -> bytes | None:
        return self.blobs.get(row.sha256)

    async def take(self, job: RunningJob, n: int, now: float) -> Grant | None:
        """Ask the job for up to ``n`` replicas for this node's own slots (none while it is paused)."""
        if job.paused:
            return None
        # request ids must keep growing across restarts: the job drops ids it has seen
        job.request_id = next_seq(job.request_id, _unix_ms())
        carried = await self.drive(job, StealRequest(self.identity.peer_id, n, job.request_id, now))
        return carried.grants[0] if carried.grants else None

    async def run_grant(self, job: RunningJob, grant: Grant) -> None:
        """Run the granted replicas here, as one batch, and feed the results back to the job."""
        await self.feed_own(job, await self.run_own(job, grant))

    async def run_own(self, job: RunningJob, grant: Grant) -> list[RunResult]:
        """Run the granted replicas here, as one batch; ``feed_own`` hands the results to the job. Those the
        batch's time budget (``CHUNK_BUDGET``) did not reach go back to the job.

        Our own leases are renewed while the batch runs, as any thief renews its own.

        Raises:
            MeshError: the batch could not run here (its replicas were released).
        """
        refs = grant.replicas

        async def renew() -> None:
            while True:
                await trio.sleep(job.owner.lease_seconds / 3)
                await self.drive(job, RenewLeases(self.identity.peer_id, refs, time.monotonic()))

        problem: MeshError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew)
            try:
                subtasks = await trio.to_thread.run_sync(lambda: self.subtasks(job, refs, own=True))
                if any(s.input is None for s in subtasks):
                    raise JournalError(f"a large input of job {job.job_id.hex()} is missing from the blob store", "damaged")
                # our own subtasks need no checking, and our own claims no encoding: they are never pushed
                results = await self.executor.run_batch(
                    job.manifest, subtasks, outbox=False, cache=False, budget=CHUNK_BUDGET
                )
            except MeshError as exc:  # caught here: a nursery would wrap it in an exception group
                problem = exc
            nursery.cancel_scope.cancel()
        if problem is not None:
            await self.drive(job, ReleaseReplicas(self.identity.peer_id, refs, time.monotonic()))
            raise problem
        done = {(r.claim.index, r.claim.replica) for r in results}
        unrun = tuple(r for r in refs if (r.index, r.replica) not in done)
        if unrun:  # the chunk's time budget ran out before them: back to the job, for any slot
            await self.drive(job, ReleaseReplicas(self.identity.peer_id, unrun, time.monotonic()))
        return results

    async def feed_own(self, job: RunningJob, results: Sequence[RunResult]) -> None:
        """Our own results to the job, as any executor's claims (``receive_claims``)."""
        for r in results:
            if r.message:
                job.messages[r.claim.index] = r.message
        job.stats.timed(sum(r.claim.fuel_used for r in results if r.seconds), sum(r.seconds for r in results))
        try:
            await self.receive_claims(job, [(r.claim, r.packed) for r in results])
        except JournalError:
            pass  # the job is paused; the verdicts wait for the journal (retry_journal)

    async def receive_claims(self, job: RunningJob, claims: Sequence[tuple[ResultClaim, Packed | None]]) -> list[Ack]:
        """Feed signed claims (ours or a peer's) to the job; the answer to each claim.

        The caller has checked each claim's signature, that its output (packed, as
        it is journalled) hashes to ``claim.output_sha256``, and that the job is not
        paused. The verdicts reached are journalled before this returns (and so
        before any executor hears its claim was accepted).

        Raises:
            JournalError: the journal refused the verdicts: the job is paused, and
                no claim of this call may be acknowledged (their executors push them
                again later).
        """
        barred = self.reputation.barred()
        now = time.monotonic()
        for claim, output in claims:
            if output is not None and claim.output_sha256 is not None and job.owner.is_open(claim.index):
                job.outputs.setdefault(claim.index, {})[claim.output_sha256] = output
        carried = await self.drive(job, *(ClaimReceived(claim, now, barred) for claim, _ in claims))
        return carried.acks

    async def cancel(self, job: RunningJob) -> None:
        """Stop the job across the mesh: nothing more is handed out, and every holder is told to stop.

        Raises:
            JournalError: the journal could not record it (the job stays stopped until the node restarts).
        """
        if job.owner.finished:
            return
        await self.drive(job, Cancel(time.monotonic()))
        self._ended(job, "cancelled", job.progress())
        await trio.to_thread.run_sync(self.store.save_snapshot, job.job_id, None, "cancelled")
        job.cancelled = True
        job.notify()

    async def drive(self, job: RunningJob, *events: Event) -> Carried:
        """Feed events to the job's state machine and carry out every instruction it returns.

        The one place the owner's instructions are carried out. What answers a
        request (grants, acknowledgements, transfers) is returned for the caller
        to send; revocations go to their holders at once; verdicts are journalled
        before this returns, and feed reputation; lost replicas cost their holder one
        failure per call, however many of them lapsed together (one missed deadline).

        Raises:
            JournalError: the verdicts reached were not journalled: the job is paused,
                and nothing in the returned answers may be sent (its claims come again).
        """
        carried = Carried()
        decided: list[VerifiedOutput] = []
        rechecked: list[int] = []
        caught: list[PeerId] = []
        failed: set[PeerId] = set()
        finished = False
        for event in events:
            for i in job.owner.handle(event):
                match i:
                    case Grant():
                        carried.grants.append(i)
                    case Ack():
                        carried.acks.append(i)
                    case Transferred():
                        carried.transferred.append(i)
                    case Renewed():
                        pass  # the holder's renewal is answered all the same; what it lost is revoked
                    case Revoke():
                        self._revoke(job, i)
                    case ReplicaLost():
                        job.stats.lost += 1
                        self._lost(job, i)
                        if i.credible and i.holder != self.identity.peer_id:
                            failed.add(i.holder)
                    case ReplicasAdded():
                        if i.why == "disagreement":  # the others are the adaptive policy's plan, not a retry
                            job.stats.added += len(i.replicas)
                        self.work_added()
                    case Reopened():
                        rechecked += i.indices
                        job.journalled["verified"] -= len(i.indices)  # only verified outputs are ever accepted alone
                        job.revised += len(i.indices)  # their old verdicts stay in ``decided``; the new ones follow
                        self._reopened(job, i)
                    case SubtaskDecided():
                        decided.append(self._journal_entry(job, i, caught))
                    case JobFinished():
                        self._ended(job, "finished", i.progress)
                        finished = True
                    case _:
                        assert_never(i)
        # One failure per holder, not per replica: a grant's replicas lapse together, and on 50 nodes
        # sharing two cores a thief whose first grant of four lapsed was served last for the whole job.
        for peer in failed:
            self.reputation.record_failure(peer)
        snapshot = self._snapshot_due(job, bool(decided or rechecked), finished)
        if job.paused:
            if decided:
                self._hold(job, decided, None)
        elif decided or snapshot is not None or rechecked:
            try:  # outputs can be megabytes and a commit may checkpoint the WAL: not on the event loop
                await trio.to_thread.run_sync(self._journal, job.job_id, decided, snapshot, rechecked)
            except JournalError as exc:
                self._hold(job, decided, exc)
            self._written(job, decided)
        for peer in caught:
            await self._distrust(peer)
        return carried

    def _reopened(self, job: RunningJob, reopened: Reopened) -> None:
        log.warning("job %s: %d results that %s alone vouched for are being checked again by others",
                    job.job_id.hex()[:12], len(reopened.indices), reopened.distrusted,
                    extra={"event": "results_rechecked", "job": job.job_id.hex(), "peer": str(reopened.distrusted),
                           "subtasks": len(reopened.indices)})  # fmt: skip
        job.notify()
        self.work_added()

    async def _distrust(self, peer: PeerId) -> None:
        """``peer`` disagreed with a verified quorum: what it alone vouched for in running jobs is decided again
        by others; in finished jobs it is listed as suspect (``meshnode results --recheck``)."""
        await trio.to_thread.run_sync(self.save_standing)  # a crash must not forget whom it caught
        suspect = await trio.to_thread.run_sync(self.store.distrust, str(peer))
        for job_id, indices in suspect.items():
            job = self.jobs.get(job_id)
            if job is not None and not job.done and not job.paused and job.owner.adaptive:
                await self.drive(job, Reopen(peer, tuple(indices), time.monotonic()))
        left = sum(len(v) for k, v in suspect.items() if k not in self.jobs or self.jobs[k].done)
        if left:
            log.warning("%s disagreed with a verified quorum: %d results of finished jobs rest on its word alone "
                        "(meshnode status lists them; meshnode results --recheck JOB runs them again)", peer, left,
                        extra={"event": "results_suspect", "peer": str(peer), "subtasks": left})  # fmt: skip

    def save_standing(self) -> None:
        """Save peer reputations and the trust book if verdicts changed them (in a worker thread)."""
        if self.standing_changed:
            self.standing_changed = False
            self.standing_changed = not self.save_standing_of(self.store, self.reputation, self.trust)

    @staticmethod
    def save_standing_of(store: Store, reputation: Reputation, trust: TrustBook) -> bool:
        """Save both in the journal's node state; False (logged) if the journal refused the write."""
        try:
            store.save_state("reputation", reputation.to_dict())
            # ages on the monotonic clock, and the wall-clock time they were taken at: see mesh_node._load_trust
            store.save_state("trust", {"book": trust.to_dict(time.monotonic()), "saved": time.time()})
        except JournalError as exc:
            log.warning("peer reputations and trust not saved: %s", exc,
                        extra={"event": "journal_error", "reason": exc.kind})  # fmt: skip
            return False
        return True

    async def recheck(self, job_id: bytes) -> int:
        """Decide again every suspect lone result of a job: those of executors caught lying since. How many.

        A finished job runs again until they are decided; a running one reopens them.

        Raises:
            KeyError: no such job on this node.
        """
        suspect = await trio.to_thread.run_sync(self.store.suspects, job_id)
        count = sum(len(v) for v in suspect.values())
        job = self.jobs.get(job_id)
        if job is None and self.store.job(job_id) is None:
            raise KeyError(job_id)
        if not count:
            return 0
        if job is not None and not job.done and job.owner.adaptive:
            for executor, indices in suspect.items():
                await self.drive(job, Reopen(PeerId.from_base58(executor), tuple(indices), time.monotonic()))
            return count
        indices = [i for v in suspect.values() for i in v]
        await trio.to_thread.run_sync(self.store.recheck, job_id, indices)
        if await trio.to_thread.run_sync(self.store.reopen_job, job_id):
            row = self.store.job(job_id)
            assert row is not None
            self.jobs[job_id] = self._resume(job_id, row.manifest)  # the rechecked results run again
            self.work_added()
        return count

    def _ended(self, job: RunningJob, outcome: str, p: Progress) -> None:
        """The job finished or was cancelled: its duration, and a line in the log."""
        job.stats.end()
        seconds = (job.stats.ended or job.stats.started) - job.stats.started
        self.metrics.job_seconds.labels(outcome).observe(seconds)
        log.info("job %s %s  %d verified, %d failed, %d disputed of %d subtasks in %.1f s", job.job_id.hex(), outcome,
                 p.verified, p.failed, p.disputed, p.total, seconds,
                 extra={"event": f"job_{outcome}", "job": job.job_id.hex(), "subtasks": p.total, "verified": p.verified,
                        "failed": p.failed, "disputed": p.disputed, "seconds": round(seconds, 3)})  # fmt: skip

    def _revoke(self, job: RunningJob, revoke: Revoke) -> None:
        if revoke.holder == self.identity.peer_id:
            return  # our own slots run chunks of a few milliseconds: their claims come back "late"
        self.revocations(revoke.holder, job.job_id, revoke.replicas, revoke.reason)

    def _lost(self, job: RunningJob, lost: ReplicaLost) -> None:
        ref, why = lost.replica, lost.reason.replace("_", " ")
        log.info("job %s: %s lost replica %d.%d (%s)", job.job_id.hex()[:12], lost.holder, ref.index, ref.replica, why,
                 extra={"event": "replica_lost", "job": job.job_id.hex(), "peer": str(lost.holder),
                        "subtask": ref.index, "replica": ref.replica, "reason": lost.reason})  # fmt: skip

    def _snapshot_due(self, job: RunningJob, decided: bool, finished: bool) -> Snapshot | None:
        """The job's state to save now, if any: its end, or its window at most once a second."""
        if finished:  # only running jobs are ever restored: the state is all that changes
            return None, "finished"
        now = time.monotonic()
        if decided and now - job.snapshot_at >= max(SNAPSHOT_EVERY, job.snapshot_cost / SNAPSHOT_SHARE):
            snapshot = job.owner.snapshot()
            job.snapshot_at = time.monotonic()
            job.snapshot_cost = job.snapshot_at - now
            return snapshot, "running"
        return None

    def _journal(
        self, job_id: bytes, decided: list[VerifiedOutput], snapshot: Snapshot | None, rechecked: Sequence[int] = ()
    ) -> None:
        """Write verdicts and lone results reopened, then the snapshot (safe in a worker thread: it touches no job state).

        Raises:
            JournalError: the verdicts were not written.
        """
        if rechecked:
            self.store.recheck(job_id, rechecked)
        if decided:
            self.store.record_outputs(job_id, decided)
        if snapshot is not None:
            try:
                self.store.save_snapshot(job_id, *snapshot)
            except JournalError as exc:  # the verdicts are in: the next snapshot will do
                log.warning("job %s: its state was not saved: %s", job_id.hex()[:12], exc,
                            extra={"event": "journal_error", "job": job_id.hex(), "reason": exc.kind})  # fmt: skip

    def _hold(self, job: RunningJob, decided: list[VerifiedOutput], exc: JournalError | None) -> None:
        """Keep verdicts the journal has not taken, and pause the job until it does (``retry_journal``).

        Raises:
            JournalError: always, so that no claim behind these verdicts is acknowledged.
        """
        job.unjournalled += decided
        if exc is not None:
            self.trouble = exc
        if exc is not None and not job.paused:
            log.error("job %s paused: %s; it resumes by itself once the journal takes writes again",
                      job.job_id.hex()[:12], exc, extra={"event": "job_paused", "job": job.job_id.hex(),
                                                         "reason": exc.kind})  # fmt: skip
            job.paused = str(exc)
        raise exc or JournalError(job.paused, "io")

    def _written(self, job: RunningJob, decided: list[VerifiedOutput]) -> None:
        """The verdicts are in the journal: count them as decided, and tell whoever waits."""
        for d in decided:
            job.decided.append(d.index)
            kind = _KIND_NAMES[status_kind(d.status)]
            job.journalled[kind] += 1
            self.metrics.verdicts[kind].inc()
        job.notify()

    async def retry_journal(self) -> list[RunningJob]:
        """Write the verdicts paused jobs hold; the jobs that resumed.

        The node calls this every few seconds while a job is paused. Only this
        writes a paused job's verdicts, so none is counted twice.
        """
        resumed = []
        for job in list(self.jobs.values()):
            while job.paused:
                held = list(job.unjournalled)
                try:
                    await trio.to_thread.run_sync(self._rewrite, job, held)
                except JournalError as exc:
                    job.paused, self.trouble = str(exc), exc
                    break
                del job.unjournalled[: len(held)]
                self._written(job, held)
                if not job.unjournalled:  # more may have come in while this one was written
                    job.paused = ""
                    self.trouble = None
                    log.info("job %s resumed: the journal takes writes again", job.job_id.hex()[:12],
                             extra={"event": "job_unpaused", "job": job.job_id.hex()})  # fmt: skip
                    resumed.append(job)
        return resumed

    def _rewrite(self, job: RunningJob, held: list[VerifiedOutput]) -> None:
        if held:
            self.store.record_outputs(job.job_id, held)
        else:
            self.store.probe()
        if job.owner.finished and not job.cancelled:
            self.store.save_snapshot(job.job_id, None, "finished")

    def flush(self) -> None:
        """Save every running job's state now (the node calls this when it stops)."""
        for job in self.jobs.values():
            try:
                if job.unjournalled:
                    self.store.record_outputs(job.job_id, job.unjournalled)
                if not job.owner.finished:
                    self.store.save_snapshot(job.job_id, job.owner.snapshot())
            except JournalError as exc:
                log.warning("job %s: its last state was not saved: %s", job.job_id.hex()[:12], exc,
                            extra={"event": "journal_error", "job": job.job_id.hex(), "reason": exc.kind})  # fmt: skip

    def _journal_entry(self, job: RunningJob, decided: SubtaskDecided, caught: list[PeerId]) -> VerifiedOutput:
        """What to journal of a verdict; its verdict feeds reputation and trust (``caught``: those it caught lying)."""
        outcome = decided.outcome
        if isinstance(outcome, Verified):
            self.reputation.record_verdict(outcome)
            caught += self.trust.record_verdict(outcome, time.monotonic())
            self.standing_changed = True
            job.stats.accepted(tuple(str(p) for p in outcome.agreeing), max((f for _, f in outcome.fuel), default=0))
            executors = [str(p) for p in outcome.counted]
            revised = decided.revised or decided.index in job.rechecking
            job.rechecking.discard(decided.index)
            how = {"verified_by": decided.verified_by, **({"revised": True} if revised else {})}
            adaptive = job.owner.adaptive
            alone = executors[0] if adaptive and decided.verified_by == "single" else None
            candidates = job.outputs.pop(decided.index, {})
            if outcome.status == "ok":
                assert outcome.output_sha256 is not None
                packed = candidates.get(outcome.output_sha256)
                data, codec = (None, PLAIN) if packed is None else (packed.data, packed.codec)
                # credit is journalled with its verdict: granted once, never lost (core/credit.py)
                credit = tuple((str(g.executor), g.fuel) for g in grants(job.job_id, decided.index, outcome, self.identity.peer_id))
                return VerifiedOutput(decided.index, "ok", data, {"executors": executors, **how}, codec=codec,
                                      credit=credit, alone=alone, adaptive=adaptive)  # fmt: skip
            own = job.messages.pop(decided.index, "")
            # A task_error's message is the task's answer, which the quorum agreed on: shown even when we ran no replica.
            message = outcome.message or own or f"{len(executors)} executors agree it fails this way"
            return VerifiedOutput(decided.index, outcome.status, None, {"executors": executors, "message": message, **how},
                                  adaptive=adaptive)  # fmt: skip
        job.outputs.pop(decided.index, None)
        job.messages.pop(decided.index, None)
        if isinstance(outcome, Disputed):
            job.stats.disputed += 1
            reported = [
                {"status": c.status, "sha256": None if c.output_sha256 is None else c.output_sha256.hex(),
                 "executors": [str(p) for p in c.executors]}
                for c in outcome.candidates
            ]  # fmt: skip
            reporters = sum(len(c.executors) for c in outcome.candidates)
            message = f"no quorum: {len(reported)} different results from {reporters} executors"
            return VerifiedOutput(decided.index, "disputed", None, {"candidates": reported, "message": message})
        assert isinstance(outcome, Failed)
        return VerifiedOutput(decided.index, outcome.code, None, {"message": outcome.message})


def max_hold(options: JobOptions) -> float:
    """How long one node may keep one replica of a job: a lease, then long enough to wait behind a few runs
    of its stock and make its own, each at most the job's time limit (``JobOwner``'s "Holding")."""
    return options.lease_seconds + HOLD_RUNS * options.limits.timeout_ms / 1000


def _stop_if_cancelled() -> None:
    """In a trio worker thread, raise ``trio.Cancelled`` once the task waiting for it is cancelled.

    A node told to stop while a large job comes in stops within one batch, instead
    of taking the whole job in first (47 s for a million inputs).
    """
    try:
        trio.from_thread.check_cancelled()
    except RuntimeError:
        pass  # not in a trio worker thread (a test, or a program creating jobs by itself)


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000


class _Counted:
    """An iterable of rows that counts them as they are read."""

    def __init__(self, rows: Iterable[bytes], check: Callable[[bytes, int], None] | None = None) -> None:
        self._rows = rows
        self._check = check
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for row in self._rows:
            if self._check is not None:
                if not isinstance(row, bytes | bytearray | memoryview):
                    raise TypeError(f"every row must be bytes (encode_row), not {type(row).__name__}")
                self._check(bytes(row), self.count)
            self.count += 1
            yield row
