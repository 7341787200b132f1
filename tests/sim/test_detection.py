"""The simulator finds what is wrong: wrong outputs where the policy lets them through, and broken rules.

A quorum of one with byzantine peers in the majority must accept wrong outputs,
and the report must say so; a run whose rules are broken on purpose (a journal
that forgets, a verdict short of its quorum, credit granted twice) must stop
with the seed and the command that replays it; an instruction the simulator
does not know stops it too.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import pytest

from meshnode.core import verify
from meshnode.core.credit import Grant
from meshnode.core.manifest import Replication
from meshnode.core.owner import JobOwner
from meshnode.core.peer_id import PeerId
from meshnode.core.result import ResultClaim
from meshnode.core.verify import Verdict, Verified, judge
from meshnode.sim import Scenario, owning, simulate
from meshnode.sim.behaviour import Behaviour, claim_of, truth
from meshnode.sim.clock import Clock
from meshnode.sim.invariants import Checker
from meshnode.sim.verification import FixedReplication
from meshnode.sim.world import peer_ids

SMALL = Scenario(peers=12, subtasks=80)


def test_a_byzantine_majority_with_quorum_one_is_reported_as_wrong_outputs() -> None:
    liars = dataclasses.replace(SMALL, replicas=1, quorum=1, max_replicas=1, wrong_fraction=0.6, wrong_rate=1.0)
    report = simulate(liars, 1)
    assert report.wrong_accepted > 20  # most subtasks went to a liar, and nothing checked them
    assert report.wrong_standing == report.wrong_accepted
    honest = simulate(dataclasses.replace(liars, wrong_fraction=0.0), 1)
    assert honest.wrong_accepted == 0


def test_colluders_that_form_a_quorum_get_wrong_outputs_accepted() -> None:
    pair = dataclasses.replace(SMALL, peers=4, jobs=1, colluder_groups=1, colluder_size=3, task_errors=0.0)
    assert simulate(pair, 2).wrong_accepted > 0


def test_a_journal_that_forgets_its_verdicts_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owning.JobJournal, "verdicts", lambda self: [])
    crashing = dataclasses.replace(SMALL, owner_crashes=2)
    with pytest.raises(AssertionError, match=r"(?s)forgot the verdict.*replay: python -m meshnode.sim --seed 3 "):
        simulate(crashing, 3)


def test_a_core_that_accepts_short_of_its_quorum_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = verify.judge

    def lenient(
        claims: Sequence[ResultClaim], replication: Replication, untrusted: AbstractSet[PeerId] = frozenset()
    ) -> Verdict:
        return real(claims, Replication(replication.replicas, 1, replication.max_replicas), untrusted)

    monkeypatch.setattr(verify, "judge", lenient)
    with pytest.raises(AssertionError, match="accepted without the evidence of fixed verification: 1 counted"):
        simulate(SMALL, 4)


def test_a_core_that_lets_barred_executors_count_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = verify.judge

    def forgetful(
        claims: Sequence[ResultClaim], replication: Replication, untrusted: AbstractSet[PeerId] = frozenset()
    ) -> Verdict:
        return real(claims, replication, frozenset())

    monkeypatch.setattr(verify, "judge", forgetful)
    colluders = dataclasses.replace(SMALL, peers=6, colluder_groups=1, colluder_size=2, collude_rate=0.5)
    with pytest.raises(AssertionError, match="barred executors counted"):
        simulate(colluders, 6)


def test_the_trace_names_the_last_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owning.JobJournal, "verdicts", lambda self: [])
    with pytest.raises(AssertionError) as caught:
        simulate(dataclasses.replace(SMALL, owner_crashes=2), 3)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("invariant broken:")
    assert "at virtual time" in lines[2] and len(lines) > 10
    assert any("SimPeer." in line or "Network." in line for line in lines[3:])


def test_an_instruction_the_simulator_does_not_know_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    handle = JobOwner.handle

    def with_a_stranger(self: JobOwner, event: object) -> list[object]:
        return [*handle(self, event), "a new instruction"]  # type: ignore[arg-type]

    monkeypatch.setattr(JobOwner, "handle", with_a_stranger)
    with pytest.raises(TypeError, match="the simulator does not carry out str"):
        simulate(SMALL, 5)


def checker() -> tuple[Checker, bytes]:
    job_id = b"j" * 16
    k = Checker(Clock(), "replay", FixedReplication(Replication(2, 2, 5)), lambda j, i: truth(j, i, 0.0))
    k.job_started(job_id, 10)
    return k, job_id


def agreed(k: Checker, job_id: bytes, index: int, executors: Sequence[PeerId]) -> Verified:
    """Two honest claims on subtask ``index``, seen by the checker, and their verdict."""
    true = truth(job_id, index, 0.0)
    claims = [claim_of(Behaviour(), true, job_id, index, r, p, random.Random(0)) for r, p in enumerate(executors)]
    for c in claims:
        k.claimed(c)
    verdict = judge(claims, Replication(2, 2, 5))
    assert isinstance(verdict, Verified)
    return verdict


def test_the_checker_refuses_a_barred_counted_executor_and_a_second_verdict() -> None:
    a, b, owner = peer_ids(3)
    k, job_id = checker()
    with pytest.raises(AssertionError, match="barred executors counted"):
        k.committed(job_id, 0, agreed(k, job_id, 0, (a, b)), frozenset({a}), owner, ())
    k, job_id = checker()
    verdict = agreed(k, job_id, 0, (a, b))
    k.committed(job_id, 0, verdict, frozenset(), owner, ())
    with pytest.raises(AssertionError, match="decided twice"):
        k.committed(job_id, 0, verdict, frozenset(), owner, ())


def test_the_checker_refuses_credit_twice_or_to_the_owner() -> None:
    a, b, owner = peer_ids(3)
    k, job_id = checker()
    verdict = agreed(k, job_id, 1, (a, b))
    fuel = max(f for _, f in verdict.fuel)
    with pytest.raises(AssertionError, match="credit granted twice"):
        k.committed(job_id, 1, verdict, frozenset(), owner, (Grant(job_id, 1, a, fuel), Grant(job_id, 1, a, fuel)))
    k, job_id = checker()
    verdict = agreed(k, job_id, 1, (a, b))
    with pytest.raises(AssertionError, match="did not agree"):
        k.committed(job_id, 1, verdict, frozenset(), owner, (Grant(job_id, 1, owner, fuel),))


def test_the_checker_refuses_an_executor_counted_for_what_it_never_claimed() -> None:
    a, b, owner = peer_ids(3)
    k, job_id = checker()
    verdict = agreed(k, job_id, 2, (a, b))
    k.claims.clear()  # as if neither had signed anything
    with pytest.raises(AssertionError, match="never claimed"):
        k.committed(job_id, 2, verdict, frozenset(), owner, ())


def test_a_peer_that_keeps_work_without_running_it_cannot_stall_a_job() -> None:
    # JobOwner bounds how long one holder keeps one replica (max_hold: a lease and four time limits of a run);
    # before that, this job never ended ("job ... did not end: 4 subtasks undecided")
    staller = dataclasses.replace(SMALL, peers=10, subtasks=100, staller_fraction=0.1, task_timeout=60.0, deadline=1200.0)
    report = simulate(staller, 1)
    assert report.verdicts.get("verified", 0) + report.verdicts.get("task_error", 0) == report.subtasks
    assert report.faults["lost replicas"] > 0  # the stallers' replicas, taken back
