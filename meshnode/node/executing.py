"""The executor side of a subtask: check it, run it (or answer from the cache), claim the result.

Nothing runs before every check passed, whoever forwarded the work: the
manifest must be signed by the owner it names, the owner trusted by this
node's policy, the job not expired, the module present with the hash the
manifest names, and the subtask proven against the manifest's input root.

A result's claim is kept in the outbox (in the journal) until the owner
acknowledges it (the claim is not signed: the owner takes it only from the
peer its stream authenticated as the executor, docs/protocol.md), and the
result is cached by (module hash, input hash, engine) so that a repeated
subtask is answered without running it again; the output is written once, in
the cache, which the outbox entry names.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from ..config import TrustPolicy
from ..core import wire
from ..core.manifest import JobManifest, Subtask, verify_subtask
from ..core.outcome import TaskError, TaskOutcome
from ..core.output_codec import PLAIN, Packed, pack, unpack
from ..core.peer_id import PeerId
from ..core.result import ResultClaim
from ..errors import JournalError, MeshError, RefusedWork, SandboxError, SandboxGone, WireError
from ..core.manifest import WASM_RUNTIME
from ..sandbox.python_runtime import PYTHON_ENGINE_ID, RUNTIME_ID, PythonScript
from ..sandbox.runtime import ENGINE_ID, Sandbox, TaskModule
from ..storage.blobs import BlobStore
from ..storage.identity import Identity
from ..storage.journal import RESULT_CACHE_BYTES, CachedResult, OutboxEntry, Store
from .metrics import NodeMetrics

__all__ = ["CheckedBatch", "Executor", "JobActivity", "RefusedWork", "RunResult"]

log = logging.getLogger(__name__)

MANIFEST_CACHE_SIZE: Final = 64
FIRST_RETRY: Final = 10.0  # seconds before the outbox pushes a result again
INPUT_MISSING: Final = "the input is not here yet (fetch it by hash first)"
ACTIVITY_JOBS: Final = 32  # jobs whose activity is kept
CACHE_TRIM_EVERY: Final = 64 << 20  # bytes put in the result cache between two looks at its size


@dataclass(slots=True)
class JobActivity:
    """What this node ran of one job: chunks, replicas, and when the last chunk started and ended (unix time)."""

    chunks: int = 0
    replicas: int = 0
    running: int = 0  # replicas in a chunk under way now
    last_started: float = 0.0
    last_ended: float = 0.0
    last_started_monotonic: float = 0.0


@dataclass(slots=True)
class CheckedBatch:
    """A batch of one job's subtasks after ``Executor.check_batch``."""

    manifest: JobManifest
    subtasks: list[Subtask] = field(default_factory=list)  # passed every check
    refused: list[tuple[int, str]] = field(default_factory=list)  # the others: position in the batch, why


@dataclass(frozen=True, slots=True)
class _Records:
    """What a batch leaves to journal: result cache rows and outbox entries."""

    cached: list[tuple[bytes, bytes, str, CachedResult]]
    outbox: list[OutboxEntry]


@dataclass(frozen=True, slots=True)
class RunResult:
    claim: ResultClaim
    encoded: bytes  # the claim as it is pushed to its owner (wire-encoded; b"" for our own job's, never pushed)
    output: bytes | None
    cached: bool
    message: str = ""  # what went wrong, for a failure (the claim carries only its code)
    packed: Packed | None = None  # the output as it is kept and sent (output_codec), packed once, here
    seconds: float = 0.0  # the run's wall time here (0 for a cached result)


class Executor:
    """Runs subtasks of any job this node trusts, on its sandbox."""

    def __init__(
        self, identity: Identity, sandbox: Sandbox, blobs: BlobStore, store: Store, trust: TrustPolicy,
        metrics: NodeMetrics | None = None,
    ) -> None:  # fmt: skip
        self.identity = identity
        self.metrics = NodeMetrics() if metrics is None else metrics  # the node's, shared by its jobs and thief
        self.sandbox = sandbox
        self.blobs = blobs
        self.store = store
        self.trust = trust
        self.cache_hits = 0
        self.runs = 0
        self.sandbox_restarts = 0  # batches run again after their sandbox process died
        self.journal_problem = ""  # why the last results could not be journalled, or ""
        self.activity: dict[bytes, JobActivity] = {}  # what ran here, by job, for the most recent jobs
        self._unlimited = trio.CapacityLimiter(1 << 20)  # the sandbox's own limiter is held around the thread trip
        self._manifests: OrderedDict[bytes, JobManifest] = OrderedDict()  # verified envelopes, by hash
        self._unkept: list[_Records] = []  # journal writes of batches run with keep=False
        self._keeping = trio.Lock()
        self.cache_bytes = RESULT_CACHE_BYTES  # the result cache's bound (outputs as stored)
        self._cached_since_trim = CACHE_TRIM_EVERY  # bytes put in the result cache since it was last trimmed

    def _activity(self, job_id: bytes) -> JobActivity:
        activity = self.activity.pop(job_id, None) or JobActivity()
        self.activity[job_id] = activity  # the most recent last
        while len(self.activity) > ACTIVITY_JOBS:
            del self.activity[next(iter(self.activity))]
        return activity

    def verified_manifest(self, envelope: bytes) -> JobManifest:
        """The manifest in an envelope its owner signed. A verified envelope is remembered (by hash),
        so a grant and its batches cost one signature check, not one per subtask.

        Raises:
            RefusedWork: not a manifest signed by the owner it names.
        """
        key = hashlib.sha256(envelope).digest()
        manifest = self._manifests.get(key)
        if manifest is None:
            try:
                manifest = wire.open_self_signed(envelope, JobManifest, "owner")
            except WireError as exc:
                raise RefusedWork(f"invalid work: {exc}") from None
            self._manifests[key] = manifest
            if len(self._manifests) > MANIFEST_CACHE_SIZE:
                self._manifests.popitem(last=False)
        return manifest

    def runtimes(self) -> tuple[str, ...]:
        """The task runtimes this node can run now: WebAssembly, and Python once it is prepared."""
        return (WASM_RUNTIME, RUNTIME_ID) if self.sandbox.python is not None else (WASM_RUNTIME,)

    def check_owner(self, owner: PeerId) -> None:
        """Raises RefusedWork when this node's trust policy excludes ``owner``."""
        if not self.trust.trusts(owner):
            raise RefusedWork(f"this node does not run jobs for {owner} (its --trust list)")

    def open_manifest(self, envelope: bytes, now_ms: int) -> JobManifest:
        """The owner's signed manifest, if this node will run its work now.

        Raises:
            RefusedWork: a bad signature, an untrusted owner, an expired job, the module missing.
        """
        manifest = self.verified_manifest(envelope)
        self.check_owner(manifest.owner)
        if manifest.expired(now_ms):
            raise RefusedWork("the job has expired")
        if manifest.runtime not in self.runtimes():
            raise RefusedWork(f"this node cannot run {manifest.runtime} tasks (ready: {', '.join(self.runtimes())})")
        if not self.blobs.has(manifest.module_sha256):
            raise RefusedWork("the module is not here yet (fetch it by hash first)")
        return manifest

    def check(self, manifest_envelope: bytes, subtask_bytes: bytes, now_ms: int) -> tuple[JobManifest, Subtask]:
        """Everything that must hold before anything runs.

        Raises:
            RefusedWork: with the reason (bad signature or proof, untrusted owner,
                expired job, missing or mismatched module or input).
        """
        manifest = self.open_manifest(manifest_envelope, now_ms)
        return manifest, self._check_subtask(manifest, subtask_bytes)

    def check_batch(self, manifest_envelope: bytes, subtasks: Sequence[bytes | Subtask], now_ms: int) -> CheckedBatch:
        """``check`` for a batch of one job's subtasks (encoded, or decoded already): the good ones,
        and a reason for each bad one.

        Raises:
            RefusedWork: the manifest itself is refused (so is every subtask).
        """
        manifest = self.open_manifest(manifest_envelope, now_ms)
        batch = CheckedBatch(manifest)
        for position, data in enumerate(subtasks):
            try:
                batch.subtasks.append(self._check_subtask(manifest, data))
            except RefusedWork as exc:
                batch.refused.append((position, exc.reason))
        return batch

    def _check_subtask(self, manifest: JobManifest, subtask: bytes | Subtask) -> Subtask:
        try:
            if isinstance(subtask, bytes):
                subtask = wire.decode(subtask, Subtask)
            verify_subtask(manifest, subtask)
        except WireError as exc:
            raise RefusedWork(f"invalid work: {exc}") from None
        if subtask.input is None and not self.blobs.has(subtask.input_sha256):
            raise RefusedWork(INPUT_MISSING)
        return subtask

    async def run(self, manifest: JobManifest, subtask: Subtask, *, outbox: bool = True) -> RunResult:
        """Run one checked subtask: ``run_batch`` of one."""
        (result,) = await self.run_batch(manifest, [subtask], outbox=outbox)
        return result

    async def run_batch(
        self, manifest: JobManifest, subtasks: Sequence[Subtask], *, outbox: bool = True,
        cache: bool = True, keep: bool = True, budget: float | None = None,
    ) -> list[RunResult]:
        """Run checked subtasks of one job (or answer them from the cache), keep the claims in the outbox.

        The whole batch is one trip into a worker thread holding one sandbox slot,
        and one journal transaction: a trivial subtask costs about as much as its
        run, not as much as a thread hop and a commit.

        ``outbox=False`` when the owner is this node: the claims are delivered by a
        function call, so there is nothing to retry or encode; and ``cache=False``
        (neither read nor written), since the owner's journal keeps every verdict.

        ``keep=False`` leaves the journal writes (outbox, cache) to ``keep_pending``,
        which the caller awaits before it pushes the results: its slot can run the
        next batch meanwhile.

        With a ``budget`` (seconds), the sandbox stops after the run that reaches it:
        the results are then those of the first subtasks only (at least one), and
        the caller hands the others back. A chunk sized from cheap subtasks that
        meets dear ones so ends on time, instead of running on alone at a job's end.

        Raises:
            RefusedWork: the module or an input vanished from the blob store, or the sandbox process died twice.
        """
        activity = self._activity(manifest.job_id)
        activity.running += len(subtasks)
        try:
            async with self.sandbox.limiter:  # the runs start when a sandbox slot is free, not before
                activity.chunks += 1
                activity.last_started, activity.last_started_monotonic = time.time(), time.monotonic()
                results, records = await self._run_in_thread(manifest, subtasks, outbox, cache, keep, budget)
        finally:
            activity.running -= len(subtasks)
            activity.last_ended = time.time()
        activity.replicas += len(results)
        hits = sum(r.cached for r in results)
        self.cache_hits += hits
        self.runs += len(results) - hits
        self.metrics.ran((r.claim.status, r.claim.fuel_used, r.seconds) for r in results if not r.cached)
        if records is not None:
            self._unkept.append(records)
        return results

    async def _run_in_thread(
        self, manifest: JobManifest, subtasks: Sequence[Subtask], outbox: bool, cache: bool, keep: bool,
        budget: float | None,
    ) -> tuple[list[RunResult], _Records | None]:
        """``_run_batch_sync`` in a worker thread. A sandbox process that dies (the OOM killer, a crash in
        wasmtime) is no result: the batch runs once more, in a new one; a second death refuses it."""
        for attempt in range(2):
            try:
                return await trio.to_thread.run_sync(
                    self._run_batch_sync, manifest, subtasks, outbox, cache, keep, budget, limiter=self._unlimited
                )
            except SandboxGone as exc:
                if attempt:
                    raise RefusedWork(f"{exc}, twice") from None
                self.sandbox_restarts += 1
                log.warning("%s; running its %d subtasks again", exc, len(subtasks))
        raise AssertionError("unreachable")

    async def keep_pending(self) -> None:
        """Journal what batches run with ``keep=False`` left to keep (every one of them, when this returns)."""
        async with self._keeping:  # a caller that finds nothing left waits for the write that took its records
            pending, self._unkept = self._unkept, []
            cached = [c for p in pending for c in p.cached]
            entries = [e for p in pending for e in p.outbox]
            if cached or entries:
                await trio.to_thread.run_sync(self._record, _Records(cached, entries))

    def _record(self, records: _Records) -> None:
        try:
            self.store.record_runs(records.cached, records.outbox)
        except JournalError as exc:
            # The results are pushed all the same; without the outbox, one the owner
            # never acknowledges is lost, its lease lapses and the owner hands it out again.
            self.journal_problem = str(exc)
            log.warning("results kept in memory only: %s", exc, extra={"event": "journal_error", "reason": exc.kind})
            return
        self.journal_problem = ""
        self._cached_since_trim += sum(len(c[3].output or b"") for c in records.cached)
        if self._cached_since_trim >= CACHE_TRIM_EVERY:  # a look at the cache's size costs a scan of it
            self._cached_since_trim = 0
            try:
                self.store.cache_trim(self.cache_bytes)
            except JournalError as exc:  # the cache only saves time: the next trim will do
                log.debug("result cache not trimmed: %s", exc)

    def _run_batch_sync(
        self, manifest: JobManifest, subtasks: Sequence[Subtask], outbox: bool, cache: bool, keep: bool,
        budget: float | None = None,
    ) -> tuple[list[RunResult], _Records | None]:
        wasm = self.blobs.get(manifest.module_sha256)
        found = [s.input if s.input is not None else self.blobs.get(s.input_sha256) for s in subtasks]
        inputs = [data for data in found if data is not None]
        if wasm is None or len(wasm) != manifest.module_size or len(inputs) != len(found):
            raise RefusedWork("the module or an input vanished from the blob store, or has the wrong size")
        module_sha = manifest.module_sha256
        engine = ENGINE_ID if manifest.runtime == WASM_RUNTIME else PYTHON_ENGINE_ID
        cached: dict[bytes, CachedResult] = {}
        try:
            if cache:
                cached = self.store.cache_get_many(module_sha, [s.input_sha256 for s in subtasks], engine)
        except JournalError as exc:  # run them all: the cache only saves time
            log.debug("result cache unreadable: %s", exc)
        plain_hits = _plain_outputs(cached)
        to_run = [i for i, s in enumerate(subtasks) if s.input_sha256 not in plain_hits]
        outcomes: dict[int, TaskOutcome] = {}
        if to_run:
            try:
                module: TaskModule | PythonScript | bytes = (
                    self.sandbox.load(wasm, nan_canonical=manifest.nan_canonical, sha256=module_sha)
                    if manifest.runtime == WASM_RUNTIME else self.sandbox.load_python(wasm, module_sha)
                )  # fmt: skip
                ran = self.sandbox.run_many_sync(
                    module, [inputs[i] for i in to_run], manifest.limits, manifest.entry, manifest.nan_canonical, budget
                )
            except SandboxError as exc:  # a module that cannot run (here, or in the sandbox process) is a result
                outcomes = {i: TaskOutcome(None, exc.error, 0, 0.0) for i in to_run}
            else:
                outcomes = dict(zip(to_run, ran))  # with a budget, the last ones may not have run
        to_cache: list[tuple[bytes, bytes, str, CachedResult]] = []
        results, entries = [], []
        for i, subtask in enumerate(subtasks):
            key = (module_sha, subtask.input_sha256, engine)
            hit = cached.get(subtask.input_sha256) if subtask.input_sha256 in plain_hits else None
            in_cache = hit is not None
            packed: Packed | None
            if hit is not None:
                error = None if hit.status == "ok" else TaskError(hit.status, hit.message)
                outcome = TaskOutcome(plain_hits[subtask.input_sha256], error, hit.fuel, 0.0)
                packed = None if hit.output is None else Packed(hit.output, hit.codec)
            elif i not in outcomes:
                continue  # the budget ran out before it: the caller hands it back
            else:
                outcome = outcomes[i]
                packed = None if outcome.output is None else pack(outcome.output)
                if cache and (outcome.error is None or outcome.error.code != "timeout"):  # a timeout says nothing lasting
                    status = "ok" if outcome.error is None else outcome.error.code
                    message = "" if outcome.error is None else outcome.error.message
                    data, codec = (None, PLAIN) if packed is None else (packed.data, packed.codec)
                    to_cache.append((*key, CachedResult(status, data, outcome.fuel_used, message, codec)))
                    in_cache = True
            claim = ResultClaim.of(manifest.job_id, subtask.index, subtask.replica, self.identity.peer_id, outcome, engine)
            encoded = wire.encode(claim) if outbox else b""
            if outbox:
                # the first push follows at once; the outbox retries only what it never delivered
                entries.append(OutboxEntry(manifest.job_id, subtask.index, subtask.replica, str(manifest.owner), encoded,
                                           None if packed is None else packed.data, attempts=0,
                                           next_try=time.time() + FIRST_RETRY, cached=key if in_cache else None,
                                           codec=PLAIN if packed is None else packed.codec))  # fmt: skip
            message = "" if outcome.error is None else outcome.error.message
            seconds = 0.0 if hit is not None else outcome.seconds
            results.append(RunResult(claim, encoded, outcome.output, hit is not None, message, packed, seconds))
        records = _Records(to_cache, entries)
        if not keep:
            return results, records
        if to_cache or entries:
            self._record(records)
        return results, None


def _plain_outputs(cached: dict[bytes, CachedResult]) -> dict[bytes, bytes | None]:
    """The plain output of each cached result, by input hash; one that does not inflate is run again."""
    plain = {}
    for digest, hit in cached.items():
        try:
            plain[digest] = None if hit.output is None else unpack(hit.output, hit.codec)
        except WireError as exc:
            log.warning("a result cache entry is damaged (%s): running its subtask again", exc)
    return plain
