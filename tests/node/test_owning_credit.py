"""Credit at the owner: granted with each verdict to the executors that agreed, never to a forger, never twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.core.job import Grant, StealRequest
from meshnode.core.manifest import JobOptions, Replication
from meshnode.core.outcome import TaskOutcome
from meshnode.core.output_codec import pack
from meshnode.core.peer_id import PeerId
from meshnode.core.result import ResultClaim
from meshnode.node.owning import JobManager, RunningJob
from meshnode.sandbox.runtime import ENGINE_ID, Sandbox
from meshnode.storage.credit_ledger import CreditLedger
from meshnode.storage.identity import load_or_create_identity
from meshnode.storage.journal import Store

from .test_owning import ALONE, INPUTS, TASK, manager


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


def peers(root: Path, *names: str) -> list[PeerId]:
    return [load_or_create_identity(root / name).peer_id for name in names]


async def report(m: JobManager, job: RunningJob, peer: PeerId, index: int, outcome: TaskOutcome) -> None:
    """``peer`` is granted a replica of subtask ``index`` and reports ``outcome`` for it."""
    (grant,) = job.owner.handle(StealRequest(peer, 1, int(time.monotonic() * 1e6), time.monotonic()))
    assert isinstance(grant, Grant)
    (ref,) = grant.replicas
    assert ref.index == index
    output = outcome.output or b""
    await m.receive_claims(job, [(ResultClaim.of(job.job_id, index, ref.replica, peer, outcome, ENGINE_ID), pack(output))])


def ok(output: bytes, fuel: int = 100) -> TaskOutcome:
    return TaskOutcome(output, None, fuel, 0.0)


async def test_the_executors_that_agreed_earn_the_agreed_fuel_and_a_forger_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        job = m.submit(TASK, INPUTS[:1], JobOptions(limits=ALONE.limits, replication=Replication(3, 2, 3)), now_ms=0)
        forger, a, b = peers(tmp_path, "forger", "a", "b")
        await report(m, job, forger, 0, ok(b"forged", fuel=5))
        await report(m, job, a, 0, ok(b"right"))
        await report(m, job, b, 0, ok(b"right"))
        (saved,) = store.outputs(job.job_id)
        assert saved.status == "ok" and saved.output == b"right"
        assert sorted(CreditLedger(store).granted()) == sorted([(str(a), 1, 100), (str(b), 1, 100)])


async def test_an_agreed_failure_earns_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        job = m.submit(TASK, INPUTS[:1], JobOptions(limits=ALONE.limits, replication=Replication(2, 2, 2)), now_ms=0)
        for peer in peers(tmp_path, "a", "b"):
            await report(m, job, peer, 0, TaskOutcome.failed("task_error", "bad seed", fuel_used=42))
        assert store.outputs(job.job_id)[0].status == "task_error"
        assert CreditLedger(store).granted() == []


async def test_a_restarted_owner_grants_nothing_twice(tmp_path: Path, sandbox: Sandbox) -> None:
    a, b = peers(tmp_path, "a", "b")
    options = JobOptions(limits=ALONE.limits, replication=Replication(2, 2, 2))
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        job = m.submit(TASK, INPUTS[:2], options, now_ms=0)
        for peer in (a, b):
            await report(m, job, peer, 0, ok(b"zero"))
        m.flush()
    with Store.open(tmp_path / "node.db") as store:
        m = manager(tmp_path, sandbox, store)
        (job,) = m.resume()
        for peer in (a, b):
            await report(m, job, peer, 1, ok(b"one", fuel=30))
        assert job.owner.finished
        assert sorted(CreditLedger(store).granted()) == sorted([(str(a), 2, 130), (str(b), 2, 130)])
