"""A job as the owner signs it: the manifest, and the subtasks provable against it.

The owner signs one ``JobManifest`` per job. Its ``inputs_root`` is the root of
a Merkle tree over every subtask input (size and SHA-256), so a ``Subtask``
needs no signature of its own: ``verify_subtask`` checks its Merkle proof
against the signed manifest, whoever forwarded it. ``replica`` is the only
field a proof does not cover: it is the owner's label for one copy of the work,
not part of the work, and the owner counts distinct executors, never replica
numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import WireError
from .merkle import MerkleTree, leaf_hash, verify_proof
from .peer_id import PeerId
from .wire import Bool, Bytes, Int, ListOf, Nested, Optional, Peer, Str, message, struct, wire

__all__ = [
    "INLINE_INPUT_MAX",
    "InputCommitment",
    "JobManifest",
    "JobOptions",
    "Replication",
    "Subtask",
    "TaskLimits",
    "WASM_RUNTIME",
    "verify_subtask",
]

INLINE_INPUT_MAX: Final = 1 << 20  # larger inputs travel by hash over the blob protocol
MAX_SUBTASKS: Final = 1 << 31
MAX_REPLICAS: Final = 32
_HASH = Bytes(32, 32)
_GiB: Final = 1 << 30


@struct
class TaskLimits:
    """What one run of one subtask may use. Exceeding any is a ``TaskError``."""

    fuel: int = wire(Int(1, 2**62))
    memory: int = wire(Int(1 << 16, 4 * _GiB))  # bytes of linear memory
    timeout_ms: int = wire(Int(1, 7 * 24 * 3600 * 1000))
    max_output: int = wire(Int(0, _GiB))  # bytes


@struct
class Replication:
    """How many distinct executors run a subtask, and how many must agree."""

    replicas: int = wire(Int(1, MAX_REPLICAS))
    quorum: int = wire(Int(1, MAX_REPLICAS))
    max_replicas: int = wire(Int(1, MAX_REPLICAS))

    def check(self) -> str | None:
        if self.quorum > self.max_replicas:
            return f"quorum {self.quorum} can never be met with at most {self.max_replicas} replicas"
        if self.replicas > self.max_replicas:
            return f"replicas {self.replicas} is more than max_replicas {self.max_replicas}"
        return None


WEEK_MS: Final = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How the submitter wants a job run; the owner turns it into the manifest its peers read."""

    limits: TaskLimits
    replication: Replication = Replication(replicas=2, quorum=2, max_replicas=5)
    # "fixed": every subtask runs on ``replication.replicas`` executors; "adaptive": on one trusted executor,
    # spot-checked, and on a quorum of ``replication.quorum`` otherwise (core/adaptive.py)
    verify: Literal["fixed", "adaptive"] = "fixed"
    entry: str = "run"
    nan_canonical: bool = False
    label: str = ""
    rows_per_subtask: int = 0  # a Python job: rows grouped per subtask (0: a WebAssembly job, one input each)
    # Renewed every third of it. A crashed or vanished holder is dropped when its connection closes, so the
    # lease only bounds a holder that is connected and silent; it must outlast a few renewals lost on a
    # loaded owner (50 nodes on 2 cores: with 30 s, every thief had a renewal go unanswered, and the
    # replicas of six nodes lapsed so often that none of their work counted).
    lease_seconds: float = 60.0
    max_attempts: int = 3
    expires_in_ms: int = WEEK_MS


WASM_RUNTIME: Final = "wasm"
MAX_ROWS: Final = 2**53


@message("manifest", version=2, max_size=4096)
class JobManifest:
    """Everything a node needs to decide whether, and how, to run a job's subtasks."""

    job_id: bytes = wire(Bytes(16, 16))
    owner: PeerId = wire(Peer())
    label: str = wire(Str(200))
    module_sha256: bytes = wire(_HASH)
    module_size: int = wire(Int(8, _GiB))
    entry: str = wire(Str(64, pattern=r"[A-Za-z_][A-Za-z0-9_.$-]*"))
    # "wasm" (a module run on one input per subtask) or a Python runtime's ID (a script run on rows)
    runtime: str = wire(Str(64, pattern=r"[a-z0-9][a-z0-9.-]*"))
    rows: int = wire(Int(0, MAX_ROWS))  # a Python job's rows (0 for wasm)
    rows_per_subtask: int = wire(Int(0, MAX_ROWS))  # consecutive rows per subtask (0 for wasm)
    limits: TaskLimits = wire(Nested(TaskLimits))
    nan_canonical: bool = wire(Bool())
    replication: Replication = wire(Nested(Replication))
    subtask_count: int = wire(Int(1, MAX_SUBTASKS))
    inputs_root: bytes = wire(_HASH)
    created_ms: int = wire(Int(0, 2**53))
    expires_ms: int = wire(Int(0, 2**53))

    def check(self) -> str | None:
        if self.expires_ms <= self.created_ms:
            return "expires_ms must be after created_ms"
        if (self.runtime == WASM_RUNTIME) != (self.rows_per_subtask == 0) or (self.rows == 0) != (self.rows_per_subtask == 0):
            return "a wasm job has no rows; a Python job has rows and rows_per_subtask"
        if self.rows and -(-self.rows // self.rows_per_subtask) != self.subtask_count:
            return f"{self.rows} rows at {self.rows_per_subtask} per subtask are not {self.subtask_count} subtasks"
        return None

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms


@message("subtask", version=1, max_size=INLINE_INPUT_MAX + 4096)
class Subtask:
    """One replica of one subtask: the input (or its hash) and its proof against the manifest."""

    job_id: bytes = wire(Bytes(16, 16))
    index: int = wire(Int(0, MAX_SUBTASKS - 1))
    replica: int = wire(Int(0, MAX_REPLICAS - 1))
    input_sha256: bytes = wire(_HASH)
    input_size: int = wire(Int(0, _GiB))
    input: bytes | None = wire(Optional(Bytes(0, INLINE_INPUT_MAX)))
    proof: tuple[bytes, ...] = wire(ListOf(_HASH, 40))

    def check(self) -> str | None:
        if self.input is not None and len(self.input) != self.input_size:
            return f"input is {len(self.input)} bytes but input_size says {self.input_size}"
        return None


def verify_subtask(manifest: JobManifest, subtask: Subtask) -> None:
    """Check that ``subtask`` is part of the job ``manifest`` commits to.

    The manifest's own signature must have been checked already (``open_self_signed``).

    Raises:
        WireError: the subtask is for another job, out of range, its input does not
            match its hash, or its proof does not lead to the manifest's root.
    """
    if subtask.job_id != manifest.job_id:
        raise WireError("subtask belongs to another job")
    if subtask.index >= manifest.subtask_count:
        raise WireError(f"subtask index {subtask.index} is beyond the job's {manifest.subtask_count}")
    if subtask.replica >= manifest.replication.max_replicas:
        raise WireError(f"replica {subtask.replica} is beyond the job's max_replicas")
    if subtask.input is not None and hashlib.sha256(subtask.input).digest() != subtask.input_sha256:
        raise WireError(f"subtask {subtask.index}: input does not match its SHA-256")
    leaf = leaf_hash(subtask.input_sha256, subtask.input_size)
    if not verify_proof(manifest.inputs_root, subtask.index, manifest.subtask_count, leaf, subtask.proof):
        raise WireError(f"subtask {subtask.index}: proof does not match the manifest's inputs_root")


@dataclass(frozen=True, slots=True)
class InputCommitment:
    """The owner's view of a job's inputs: their hashes and the tree over them."""

    digests: tuple[bytes, ...]
    sizes: tuple[int, ...]
    tree: MerkleTree

    @classmethod
    def of(cls, inputs: Iterable[bytes]) -> InputCommitment:
        digests, sizes = [], []
        for data in inputs:
            digests.append(hashlib.sha256(data).digest())
            sizes.append(len(data))
        tree = MerkleTree([leaf_hash(d, n) for d, n in zip(digests, sizes, strict=True)])
        return cls(tuple(digests), tuple(sizes), tree)

    @classmethod
    def from_digests(cls, digests: Sequence[bytes], sizes: Sequence[int]) -> InputCommitment:
        """Rebuild from the hashes and sizes alone (a restarted owner keeps the inputs as blobs)."""
        tree = MerkleTree([leaf_hash(d, n) for d, n in zip(digests, sizes, strict=True)])
        return cls(tuple(digests), tuple(sizes), tree)

    @property
    def root(self) -> bytes:
        return self.tree.root

    def __len__(self) -> int:
        return len(self.digests)

    def subtask(self, job_id: bytes, index: int, replica: int, data: bytes | None, *, proof: bool = True) -> Subtask:
        """The subtask for input ``index``; ``data`` inline, or None to send it by hash.

        ``proof=False`` leaves the Merkle proof out, for the owner's own runs (nobody checks them).
        """
        return Subtask(
            job_id=job_id,
            index=index,
            replica=replica,
            input_sha256=self.digests[index],
            input_size=self.sizes[index],
            input=data,
            proof=self.tree.proof(index) if proof else (),
        )
