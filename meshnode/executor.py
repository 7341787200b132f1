"""The executor side of a subtask: check it, run it (or answer from the cache), sign the result.

Nothing runs before every check passed, whoever forwarded the work: the
manifest must be signed by the owner it names, the owner trusted by this
node's policy, the job not expired, the module present with the hash the
manifest names, and the subtask proven against the manifest's input root.

A result is signed with the node key, kept in the outbox (in the journal)
until the owner acknowledges it, and cached by (module hash, input hash,
engine) so that a repeated subtask is answered without running it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from .blobs import BlobStore
from .core import wire
from .core.manifest import JobManifest, Subtask, verify_subtask
from .core.outcome import TaskError, TaskOutcome
from .core.result import ResultClaim
from .errors import MeshError, WireError
from .identity import Identity
from .sandbox import ENGINE_ID, Sandbox
from .store import CachedResult, OutboxEntry, Store
from .trust import TrustPolicy

__all__ = ["Executor", "RefusedWork", "SignedResult"]

log = logging.getLogger(__name__)


class RefusedWork(MeshError):
    """A subtask this node will not run; ``reason`` is sent back to whoever offered it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedResult:
    claim: ResultClaim
    envelope: bytes  # the claim, signed by this node
    output: bytes | None
    cached: bool


class Executor:
    """Runs subtasks of any job this node trusts, on its sandbox."""

    def __init__(self, identity: Identity, sandbox: Sandbox, blobs: BlobStore, store: Store, trust: TrustPolicy) -> None:
        self.identity = identity
        self.sandbox = sandbox
        self.blobs = blobs
        self.store = store
        self.trust = trust
        self.cache_hits = 0
        self.runs = 0

    def check(self, manifest_envelope: bytes, subtask_bytes: bytes, now_ms: int) -> tuple[JobManifest, Subtask]:
        """Everything that must hold before anything runs.

        Raises:
            RefusedWork: with the reason (bad signature or proof, untrusted owner,
                expired job, missing or mismatched module or input).
        """
        try:
            manifest = wire.open_self_signed(manifest_envelope, JobManifest, "owner")
            subtask = wire.decode(subtask_bytes, Subtask)
            verify_subtask(manifest, subtask)
        except WireError as exc:
            raise RefusedWork(f"invalid work: {exc}") from None
        if not self.trust.trusts(manifest.owner):
            raise RefusedWork(f"this node does not run jobs for {manifest.owner} (its --trust list)")
        if manifest.expired(now_ms):
            raise RefusedWork("the job has expired")
        if not self.blobs.has(manifest.module_sha256):
            raise RefusedWork("the module is not here yet (fetch it by hash first)")
        if subtask.input is None and not self.blobs.has(subtask.input_sha256):
            raise RefusedWork("the input is not here yet (fetch it by hash first)")
        return manifest, subtask

    async def run(self, manifest: JobManifest, subtask: Subtask, *, outbox: bool = True) -> SignedResult:
        """Run a checked subtask (or answer it from the cache), sign the claim and put it in the outbox.

        ``outbox=False`` when the owner is this node: the claim is delivered by a
        function call, so there is nothing to retry. Journal writes run in a worker
        thread: outputs can be megabytes, and the node's event loop must not wait on them.
        """
        module = self.blobs.get(manifest.module_sha256)
        data = subtask.input if subtask.input is not None else self.blobs.get(subtask.input_sha256)
        if module is None or data is None or len(module) != manifest.module_size:
            raise RefusedWork("the module or input vanished from the blob store, or has the wrong size")
        cached = await trio.to_thread.run_sync(self.store.cache_get, manifest.module_sha256, subtask.input_sha256, ENGINE_ID)
        if cached is not None:
            self.cache_hits += 1
            error = None if cached.status == "ok" else TaskError(cached.status, cached.message)
            outcome = TaskOutcome(cached.output, error, cached.fuel, 0.0)
        else:
            self.runs += 1
            outcome = await self.sandbox.run(
                module, data, manifest.limits, entry=manifest.entry, nan_canonical=manifest.nan_canonical
            )
            if outcome.error is None or outcome.error.code != "timeout":  # a timeout says nothing lasting
                status = "ok" if outcome.error is None else outcome.error.code
                message = "" if outcome.error is None else outcome.error.message
                await trio.to_thread.run_sync(
                    self.store.cache_put, manifest.module_sha256, subtask.input_sha256, ENGINE_ID,
                    CachedResult(status, outcome.output, outcome.fuel_used, message),
                )  # fmt: skip
        claim = ResultClaim.of(manifest.job_id, subtask.index, subtask.replica, self.identity.peer_id, outcome, ENGINE_ID)
        envelope = wire.sign(claim, self.identity.signing_key)
        if outbox:
            entry = OutboxEntry(manifest.job_id, subtask.index, subtask.replica, str(manifest.owner), envelope,
                                outcome.output, attempts=0, next_try=0.0)  # fmt: skip
            await trio.to_thread.run_sync(self.store.outbox_put, entry)
        return SignedResult(claim, envelope, outcome.output, cached is not None)
