"""Lone results in the journal (adaptive replication): who vouched alone, suspects, rechecks, withdrawn credit."""

from __future__ import annotations

from pathlib import Path

from meshnode.storage.credit_ledger import CreditLedger
from meshnode.storage.journal import Store, VerifiedOutput

JOB, OTHER = b"J" * 16, b"K" * 16


def lone(index: int, executor: str) -> VerifiedOutput:
    detail = {"executors": [executor], "verified_by": "single"}
    return VerifiedOutput(index, "ok", b"lie", detail, credit=((executor, 9),), alone=executor, adaptive=True)


def quorum(index: int, *executors: str, revised: bool = False) -> VerifiedOutput:
    detail = {"executors": list(executors), "verified_by": "quorum", **({"revised": True} if revised else {})}
    return VerifiedOutput(index, "ok", b"right", detail, credit=tuple((e, 9) for e in executors), adaptive=True)


def test_a_caught_executors_lone_results_become_suspect_are_rechecked_and_replaced_by_a_quorum(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        for job in (JOB, OTHER):
            store.begin_job(job)
        store.record_outputs(JOB, [lone(0, "T"), lone(1, "H"), quorum(2, "T", "H"), lone(3, "T")])
        store.record_outputs(OTHER, [lone(0, "T")])
        assert store.suspects(JOB) == {}
        assert store.distrust("T") == {JOB: [0, 3], OTHER: [0]}  # the quorum it was part of is not suspect
        assert store.suspects(JOB) == {"T": [0, 3]}
        store.recheck(JOB, [0])
        assert store.suspects(JOB) == {"T": [3]}
        assert [i for i, _ in store.verdicts(JOB)] == [1, 2, 3]  # a result being rechecked is not a verdict
        assert store.rechecking(JOB) == [0]
        store.record_outputs(JOB, [quorum(0, "H", "O", revised=True)])
        assert store.output(JOB, 0).output == b"right"  # type: ignore[union-attr]
        assert [i for i, _ in store.verdicts(JOB)] == [0, 1, 2, 3] and store.rechecking(JOB) == []
        # the lie's credit, not yet signed for, is withdrawn; the new quorum's is granted
        ledger = CreditLedger(store)
        assert (JOB, 0, 9) not in ledger.unreceipted("T") and (JOB, 3, 9) in ledger.unreceipted("T")
        assert (JOB, 0, 9) in ledger.unreceipted("H") and (JOB, 0, 9) in ledger.unreceipted("O")
        assert store.distrust("T") == {JOB: [3], OTHER: [0]}  # caught again: nothing new, nothing lost
    with Store.open(tmp_path / "node.db") as store:  # across a restart
        assert store.suspects(OTHER) == {"T": [0]}
        assert CreditLedger(store).granted()
