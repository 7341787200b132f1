"""The credit ledger: grants journalled with their verdicts, once; receipts issued once, kept, listed."""

from __future__ import annotations

from pathlib import Path

from meshnode.storage.credit_ledger import CreditLedger, IssuedReceipt, StoredReceipt
from meshnode.storage.journal import SCHEMA_VERSION, Store, VerifiedOutput

JOB = b"J" * 16


def verdict(index: int, *credit: tuple[str, int]) -> VerifiedOutput:
    return VerifiedOutput(index, "ok", b"out", {"executors": [e for e, _ in credit]}, credit=credit)


def test_a_grant_is_journalled_with_its_verdict_and_never_twice_across_a_restart(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(JOB)
        store.record_outputs(JOB, [verdict(0, ("A", 10), ("B", 10)), verdict(1, ("A", 7))])
    with Store.open(tmp_path / "node.db") as store:  # a restarted owner writes the same verdict again
        store.record_outputs(JOB, [verdict(1, ("A", 7))])
        ledger = CreditLedger(store)
        assert ledger.granted() == [("A", 2, 17), ("B", 1, 10)]
        assert ledger.unreceipted("A") == [(JOB, 0, 10), (JOB, 1, 7)]


def test_a_receipt_covers_its_grants_once_and_is_kept_across_a_restart(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(JOB)
        store.record_outputs(JOB, [verdict(0, ("A", 10)), verdict(1, ("A", 7))])
        ledger = CreditLedger(store)
        ledger.issue("O", "A", [IssuedReceipt(1, JOB, (0, 1), 2, 17, b"signed-1")])
        store.record_outputs(JOB, [verdict(2, ("A", 5))])
    with Store.open(tmp_path / "node.db") as store:
        ledger = CreditLedger(store)
        assert ledger.unreceipted("A") == [(JOB, 2, 5)]
        assert ledger.last_seq("O", "A") == 1
        ledger.issue("O", "A", [IssuedReceipt(2, JOB, (2,), 1, 5, b"signed-2")])
        assert ledger.receipts("O", "A", after=0, limit=10) == [b"signed-1", b"signed-2"]
        assert ledger.receipts("O", "A", after=1, limit=10) == [b"signed-2"]
        assert ledger.unreceipted("A") == []


def test_received_receipts_are_kept_once(tmp_path: Path) -> None:
    r = StoredReceipt("O", "A", 1, JOB, 2, 17, b"signed")
    with Store.open(tmp_path / "node.db") as store:
        ledger = CreditLedger(store)
        assert ledger.keep([r]) == 1
        assert ledger.keep([r, StoredReceipt("O", "A", 1, JOB, 9, 99, b"forged")]) == 0
    with Store.open(tmp_path / "node.db") as store:
        assert CreditLedger(store).received("A") == [r]
        assert CreditLedger(store).received("B") == []
        assert CreditLedger(store).owners("A") == ["O"]


def test_a_schema_4_journal_is_migrated_and_keeps_its_verdicts(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(JOB)
        store.record_outputs(JOB, [VerifiedOutput(0, "ok", b"old output", {})])
        with store._tx() as db:  # schema 4 had no credit tables
            db.execute("DROP TABLE credit_grants")
            db.execute("DROP TABLE credit_receipts")
            db.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")
    with Store.open(tmp_path / "node.db") as store:
        assert [o.output for o in store.outputs(JOB)] == [b"old output"]
        with store._read() as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(SCHEMA_VERSION) == "7"
        store.record_outputs(JOB, [verdict(1, ("A", 3))])  # the new tables are there
        assert CreditLedger(store).granted() == [("A", 1, 3)]
