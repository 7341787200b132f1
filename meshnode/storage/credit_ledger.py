"""The credit ledger in the journal: grants this node made as an owner, receipts it signed and received.

Grants are written with their verdicts (``Store.record_outputs``), in the same
transaction, so a verdict and its credit survive or vanish together. A receipt
is written in the same transaction that marks the grants it covers, so a grant
is in exactly one receipt, whenever the node stops. Received receipts are kept
as the owner signed them (the caller checked the signature first): the
executor's proof of its work, for anyone to check again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .journal import Store

__all__ = ["CreditLedger", "IssuedReceipt", "StoredReceipt"]

_UNRECEIPTED_MAX = 100_000  # grants batched into receipts in one go; the rest the next time


@dataclass(frozen=True, slots=True)
class IssuedReceipt:
    """A receipt this node signed, and the subtask indices whose grants it covers."""

    seq: int
    job_id: bytes
    indices: tuple[int, ...]
    results: int
    fuel: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    owner: str
    executor: str
    seq: int
    job_id: bytes
    results: int
    fuel: int
    envelope: bytes


class CreditLedger:
    """Credit rows of one journal (``Store``): see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- owner ---------------------------------------------------------------------------

    def unreceipted(self, executor: str) -> list[tuple[bytes, int, int]]:
        """Grants to ``executor`` no receipt covers yet: (job ID, index, fuel), oldest first."""
        with self.store._read() as db:
            return db.execute(
                "SELECT job_id, idx, fuel FROM credit_grants WHERE executor = ? AND receipt IS NULL ORDER BY rowid LIMIT ?",
                (executor, _UNRECEIPTED_MAX),
            ).fetchall()

    def last_seq(self, owner: str, executor: str) -> int:
        """The highest receipt number from ``owner`` to ``executor`` in this journal (0: none)."""
        with self.store._read() as db:
            row = db.execute("SELECT MAX(seq) FROM credit_receipts WHERE owner = ? AND executor = ?", (owner, executor))
            return int(row.fetchone()[0] or 0)

    def issue(self, owner: str, executor: str, receipts: Sequence[IssuedReceipt]) -> None:
        """Keep signed receipts and mark the grants they cover, in one transaction.

        Raises:
            JournalError: nothing was written; the grants stay unreceipted.
        """
        with self.store._tx() as db:
            for r in receipts:
                db.executemany(
                    "UPDATE credit_grants SET receipt = ? WHERE job_id = ? AND idx = ? AND executor = ? AND receipt IS NULL",
                    [(r.seq, r.job_id, i, executor) for i in r.indices],
                )
                db.execute("INSERT INTO credit_receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (owner, executor, r.seq, r.job_id, r.results, r.fuel, r.envelope))  # fmt: skip

    def receipts(self, owner: str, executor: str, after: int, limit: int) -> list[bytes]:
        """The receipts from ``owner`` to ``executor`` numbered above ``after``, in order, at most ``limit``."""
        with self.store._read() as db:
            rows = db.execute(
                "SELECT receipt FROM credit_receipts WHERE owner = ? AND executor = ? AND seq > ? ORDER BY seq LIMIT ?",
                (owner, executor, after, limit),
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def granted(self) -> list[tuple[str, int, int]]:
        """Credit granted per executor: (executor, results, fuel), most fuel first."""
        with self.store._read() as db:
            return db.execute(
                "SELECT executor, COUNT(*), SUM(fuel) FROM credit_grants GROUP BY executor ORDER BY SUM(fuel) DESC"
            ).fetchall()

    # --- executor ------------------------------------------------------------------------

    def keep(self, received: Sequence[StoredReceipt]) -> int:
        """Keep receipts received (their signatures checked); a receipt already kept stays as it was. How many were new."""
        with self.store._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO credit_receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.owner, r.executor, r.seq, r.job_id, r.results, r.fuel, r.envelope) for r in received],
            )
            return int(db.total_changes - before)

    def owners(self, executor: str) -> list[str]:
        """The owners ``executor`` (this node) holds receipts from."""
        with self.store._read() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT owner FROM credit_receipts WHERE executor = ?", (executor,))]

    def received(self, executor: str) -> list[StoredReceipt]:
        """Every receipt kept for ``executor`` (this node), by owner and number."""
        with self.store._read() as db:
            rows = db.execute(
                "SELECT owner, executor, seq, job_id, results, fuel, receipt FROM credit_receipts "
                "WHERE executor = ? ORDER BY owner, seq", (executor,),
            ).fetchall()  # fmt: skip
        return [StoredReceipt(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], bytes(r[6])) for r in rows]
