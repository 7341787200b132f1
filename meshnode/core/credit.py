"""Credit for verified work, as BOINC grants it, without a server: what to grant, receipts, checking them.

Theory of operation:

The owner of a job grants credit when it journals a verdict (``grants``): every
executor whose claim agreed with a verified output earns the fuel of the agreed
run; the owner earns nothing from its own job. A disputed subtask, one that
failed, and a failure the quorum agreed on (a ``task_error`` included) earn
nothing, as BOINC grants nothing for errors: a deterministic failure is cheap
to agree on (a task can fail at once on any input), so paying for it would pay
for junk work. Grants are journalled in the same transaction as the verdict,
keyed by (job, subtask, executor), so nothing is granted twice nor lost.

Credit is fuel, normalised: ``FUEL_PER_CREDIT`` fuel is 1 credit. Fuel is the
mesh's deterministic unit of work (about one WebAssembly instruction), so every
owner measures the same amount of work the same way, whatever its clock.

The owner signs one ``CreditReceipt`` per batch: the grants to one executor for
one job not covered by an earlier receipt (``batch``). Receipts to one executor
are numbered 1, 2, 3 ... by that owner, so an executor asks for "everything after
my highest" (``CreditAsk``) and a lost answer is simply asked for again; the
owner keeps every receipt it signed. A receipt is self-contained: it names its
owner (the signer), executor, job, how many results and how much fuel, a hash of
the subtask indices it covers and when it was signed, so anyone can check it
with ``open_receipt`` and nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ..errors import WireError
from .peer_id import PeerId
from .verify import Verified
from .wire import Bytes, Int, ListOf, Peer, message, open_self_signed, wire

__all__ = [
    "FUEL_PER_CREDIT",
    "MAX_RECEIPTS",
    "CreditAsk",
    "CreditReceipt",
    "CreditReply",
    "Grant",
    "ReceiptDraft",
    "batch",
    "credit_of",
    "grants",
    "indices_hash",
    "open_receipt",
]

# 10^9 fuel = 1 credit: about 0.12 s of one core running mandelbrot here (docs/benchmarks.md:
# 4.65 G fuel in 0.56 s). Fuel does not depend on the machine, so the unit never needs the
# recalibration a benchmark-based one does (docs/decisions.md).
FUEL_PER_CREDIT: Final = 10**9
MAX_RECEIPTS: Final = 64  # per CreditReply; the executor asks again from its new highest
RECEIPT_MAX_SIZE: Final = 512


@dataclass(frozen=True, slots=True)
class Grant:
    """Credit owed to ``executor`` for one verified run of subtask ``index`` of ``job_id``."""

    job_id: bytes
    index: int
    executor: PeerId
    fuel: int


def credit_of(fuel: int) -> float:
    """Fuel as credit."""
    return fuel / FUEL_PER_CREDIT


def grants(job_id: bytes, index: int, verdict: Verified, owner: PeerId) -> tuple[Grant, ...]:
    """What a verdict earns: the agreed fuel to every agreeing executor but the owner; nothing unless "ok".

    ``verdict.fuel`` holds the agreed count per engine; executors on different engines each ran
    the same work, counted differently, so each is granted the largest (as the job's cost is).
    """
    if not verdict.ok or not verdict.fuel:
        return ()
    fuel = max(f for _, f in verdict.fuel)
    return tuple(Grant(job_id, index, p, fuel) for p in dict.fromkeys(verdict.agreeing) if p != owner)


def indices_hash(indices: Iterable[int]) -> bytes:
    """SHA-256 over the sorted subtask indices (4 bytes big-endian each): what a receipt covers."""
    return hashlib.sha256(b"".join(i.to_bytes(4, "big") for i in sorted(indices))).digest()


@message("credit_receipt", version=1, max_size=RECEIPT_MAX_SIZE)
class CreditReceipt:
    """The owner's signed statement: ``executor`` ran ``results`` verified subtasks of ``job_id`` for it."""

    owner: PeerId = wire(Peer())  # the signer
    executor: PeerId = wire(Peer())
    job_id: bytes = wire(Bytes(16, 16))
    seq: int = wire(Int(1, 2**62))  # this owner's receipts to this executor: 1, 2, 3 ...
    results: int = wire(Int(1, 2**31))
    fuel: int = wire(Int(0, 2**62))
    indices_sha256: bytes = wire(Bytes(32, 32))
    issued_ms: int = wire(Int(0, 2**62))  # Unix time, milliseconds

    @property
    def credit(self) -> float:
        return credit_of(self.fuel)


@message("credit_ask", version=1, max_size=64)
class CreditAsk:
    """Executor -> owner: "the receipts you signed for me after number ``after``"."""

    after: int = wire(Int(0, 2**62))


@message("credit_reply", version=1, max_size=MAX_RECEIPTS * (RECEIPT_MAX_SIZE + 160) + 64)
class CreditReply:
    """Owner -> executor: signed receipts, in order of ``seq``."""

    receipts: tuple[bytes, ...] = wire(ListOf(Bytes(1, RECEIPT_MAX_SIZE + 128), MAX_RECEIPTS))


@dataclass(frozen=True, slots=True)
class ReceiptDraft:
    """A receipt to sign, and the grants it covers (to mark them receipted)."""

    receipt: CreditReceipt
    indices: tuple[int, ...]


def batch(
    owner: PeerId, executor: PeerId, unreceipted: Sequence[Grant], last_seq: int, now_ms: int
) -> list[ReceiptDraft]:
    """One receipt per job for the grants to ``executor`` no receipt covers yet, numbered after ``last_seq``.

    Jobs come in the order of their first grant in ``unreceipted``, so replaying the same
    grants gives the same receipts (but for the time).

    Raises:
        ValueError: a grant to another executor, or one subtask granted twice.
    """
    by_job: dict[bytes, dict[int, int]] = {}
    for g in unreceipted:
        if g.executor != executor:
            raise ValueError(f"a grant to {g.executor} in a batch for {executor}")
        runs = by_job.setdefault(g.job_id, {})
        if g.index in runs:
            raise ValueError(f"subtask {g.index} of job {g.job_id.hex()} granted twice")
        runs[g.index] = g.fuel
    drafts = []
    for seq, (job_id, runs) in enumerate(by_job.items(), start=last_seq + 1):
        indices = tuple(sorted(runs))
        receipt = CreditReceipt(owner=owner, executor=executor, job_id=job_id, seq=seq, results=len(runs),
                                fuel=sum(runs.values()), indices_sha256=indices_hash(indices), issued_ms=now_ms)  # fmt: skip
        drafts.append(ReceiptDraft(receipt, indices))
    return drafts


def open_receipt(envelope: bytes, owner: PeerId | None = None, executor: PeerId | None = None) -> CreditReceipt:
    """Check a signed receipt: signed by the owner it names (and, if given, that it is ``owner``'s,
    for ``executor``).

    Raises:
        WireError: malformed, a bad signature, or another owner or executor than expected.
    """
    receipt = open_self_signed(envelope, CreditReceipt, "owner")
    if owner is not None and receipt.owner != owner:
        raise WireError(f"a receipt signed by {receipt.owner}, not by {owner}")
    if executor is not None and receipt.executor != executor:
        raise WireError(f"a receipt for {receipt.executor}, not for {executor}")
    return receipt
