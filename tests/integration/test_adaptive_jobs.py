"""Adaptive replication on real nodes: a trusted peer turns bad, is caught by a spot check, and its lone results are
run again by others and replaced."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack, closing
from pathlib import Path

import trio

from meshnode.core.manifest import JobOptions, Replication
from meshnode.core.reputation import Reputation
from meshnode.node.mesh_node import MeshNode

from ..waiting import JOB
from .test_mesh_jobs import corrupt_some_outputs, mandelbrot_job, start_mesh

ADAPTIVE = Replication(replicas=1, quorum=2, max_replicas=3)


def turn_bad(node: MeshNode) -> list[int]:
    """From now on ``node`` flips a byte of every output it computes, and signs the lie; the subtasks it lied on."""
    return corrupt_some_outputs(node, which=lambda index: True)


def never_checking() -> float:
    return 0.999999


def draws_checking_once_accepted(journal: sqlite3.Connection, liar: MeshNode) -> Callable[[], float]:
    """The owner's spot-check draws: none checks until its ``journal`` holds one more result accepted on
    ``liar``'s word alone than now (its whole batch of results is drawn for before that), every later one does."""
    query = "SELECT COUNT(*) FROM lone_results WHERE executor = ?"
    before = journal.execute(query, (str(liar.peer_id),)).fetchone()[0]
    return lambda: 0.0 if journal.execute(query, (str(liar.peer_id),)).fetchone()[0] > before else 0.999999


async def test_a_trusted_peer_that_turns_bad_is_caught_by_a_spot_check_and_its_lone_results_are_rechecked(
    tmp_path: Path,
) -> None:
    module, tiles, limits, expected = await mandelbrot_job(768, 36, 200)
    async with AsyncExitStack() as stack:
        owner, honest, turncoat = await start_mesh(stack, tmp_path, 3)
        options = JobOptions(limits=limits, replication=ADAPTIVE, verify="adaptive")

        # A long clean record: every node runs every subtask of a job, and all agree.
        everyone = JobOptions(limits=limits, replication=Replication(3, 3, 3))
        with trio.fail_after(JOB):
            assert [r.output for r in await (await owner.submit(module, tiles, everyone)).wait()] == expected
        assert owner.jobs.trust.streak(turncoat.peer_id, time.monotonic()) >= len(tiles) - 1

        # Trusted now: it runs subtasks alone. It starts lying, and a job with no spot check at all finishes
        # with its lies in it.
        lied = turn_bad(turncoat)
        bad = str(turncoat.peer_id)
        owner.jobs.draw = never_checking
        unchecked = await owner.submit(module, tiles, options)
        with trio.fail_after(JOB):
            fooled = await unchecked.wait()
        wrong = {r.index for r in fooled if r.output != expected[r.index]}
        assert wrong and wrong == {r.index for r in fooled if r.executors == (bad,)}
        assert owner.job_summary(unchecked.job_id)["suspect"] == 0  # type: ignore[index]  # not caught yet

        # The next job's draws let its first lies through unchecked, then check everything.
        journal = stack.enter_context(closing(sqlite3.connect(f"file:{owner.config.data_dir}/node.db?mode=ro", uri=True)))
        owner.jobs.draw = draws_checking_once_accepted(journal, turncoat)
        second = await owner.submit(module, tiles, options)
        seen: list[tuple[int, str, bool, tuple[str, ...]]] = []
        with trio.fail_after(JOB):
            async for r in second.results():
                seen.append((r.index, r.verified_by, r.revised, r.executors))
        final = await second.wait()

        accepted_lies = [i for i, how, revised, ex in seen if how == "single" and ex == (bad,) and not revised]
        assert lied and accepted_lies, f"the turncoat's lies should have been accepted alone first: {seen}"
        replaced = {i for i, _, revised, _ in seen if revised}
        assert set(accepted_lies) <= replaced  # every lie it got through was run again by others ...
        assert [r.output for r in final] == expected  # ... and replaced: the job's outputs are exec's
        assert all(bad not in r.executors for r in final)
        assert all(r.revised for r in final if r.index in set(accepted_lies))
        assert owner.jobs.trust.streak(turncoat.peer_id, time.monotonic()) == 0
        assert owner.reputation.barred_from_quorum(turncoat.peer_id)
        # saved the moment it was caught: a crash now would not forget it
        saved = owner.jobs.store.load_state("reputation")
        assert saved is not None and Reputation.from_dict(saved).barred_from_quorum(turncoat.peer_id)
        assert honest.jobs.executor.runs > 0
        ways = Counter(r.verified_by for r in final)
        assert ways["single"] > 0 and set(ways) <= {"single", "single+spotcheck", "quorum"}, ways
        status = owner.job_summary(second.job_id)
        assert status is not None and status["state"] == "finished" and status["suspect"] == 0

        # The job that finished before the catch: its lies are listed, and a recheck replaces them.
        assert owner.job_summary(unchecked.job_id)["suspect"] == len(wrong)  # type: ignore[index]
        assert await owner.recheck_job(unchecked.job_id) == len(wrong)
        with trio.fail_after(JOB):
            rechecked = await owner.jobs.jobs[unchecked.job_id].wait()
        assert [r.output for r in rechecked] == expected
        assert {r.index for r in rechecked if r.revised} == wrong and all(bad not in r.executors for r in rechecked)
        assert owner.job_summary(unchecked.job_id)["suspect"] == 0  # type: ignore[index]
