"""One simulated run: build the mesh a scenario and a seed describe, inject the faults, run it, report.

Theory of operation:

``simulate`` makes every peer (``peer.py``), starts them at time 0, schedules
what the plan decided (job submissions, crashes and restarts, partitions and
their healing, cancels) and runs the event heap until every job has ended or
the scenario's deadline passes. The checker (``invariants.py``) watches every
commit as it happens; at the end it checks that every job ended with each
subtask decided. A broken rule raises ``AssertionError`` with the seed, the
command that replays it and the last events.

The topology changes are told to whoever would notice them: the job owners'
peer tables (``liveness.py``) lose the connection ``DETECT_SECONDS`` after a
crash or a cut, and meet the peer again when it restarts or the cut heals; a
peer without jobs of its own that holds work of an owner it lost is told
``OwnerLeft`` when a table would have called that owner gone.
"""

from __future__ import annotations

import hashlib
import random
import time
from functools import partial

from .behaviour import truth
from .clock import Clock
from .directory import Directory
from .invariants import Checker
from .liveness import DETECT_SECONDS, GONE_SECONDS
from .network import Network
from .peer import SimPeer
from .report import Report
from .scenario import Crash, Partition, Scenario, plan
from .verification import verification_for
from .world import World, peer_ids

__all__ = ["Simulation", "simulate"]


def simulate(scenario: Scenario, seed: int) -> Report:
    """Run ``scenario`` with ``seed``; the report, or ``AssertionError`` if an invariant broke.

    Raises:
        ValueError: the scenario is inconsistent, or names a verification the core does not offer.
        AssertionError: an invariant broke (the message holds the seed, the replay command and a trace).
    """
    return Simulation(scenario, seed).run()


class Simulation:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        problem = scenario.check()
        if problem:
            raise ValueError(problem)
        rng = random.Random(seed)
        the_plan = plan(scenario, rng)
        clock = Clock()
        verification = verification_for(scenario)
        replay = " ".join(["python -m meshnode.sim", "--seed", str(seed), *scenario.args()])
        checker = Checker(clock, replay, verification, partial(truth, task_errors=scenario.task_errors))
        self.peers: list[SimPeer] = []
        net = Network(clock, rng, self.peers, [p.latency for p in the_plan.profiles], loss=scenario.loss,
                      jitter=scenario.jitter, reorder=scenario.reorder, rpc_timeout=scenario.rpc_timeout)  # fmt: skip
        self.world = World(seed, scenario, the_plan, clock, rng, net, Directory(clock, scenario.peers), checker,
                           verification, peer_ids(scenario.peers))  # fmt: skip
        self.world.job_ended = self._job_ended
        checker.truth = self.world.truth  # the same, kept
        self.peers.extend(SimPeer(self.world, i, profile) for i, profile in enumerate(the_plan.profiles))
        for p in self.peers:
            p.die = partial(self._die, p.index)
        self.job_ids = [hashlib.sha256(b"meshnode-sim-job %d %d" % (seed, j)).digest()[:16] for j in range(scenario.jobs)]

    def run(self) -> Report:
        """Start the mesh, run it to the end (or the deadline), check the end and report."""
        started = time.perf_counter()
        self.start()
        self.world.clock.run(until=self.world.scenario.deadline)
        self.world.checker.finish(self._describe)
        return self._report(time.perf_counter() - started)

    def start(self) -> None:
        """Start every peer and schedule what the plan injects (``run`` does it; call it to step the clock yourself)."""
        w = self.world
        clock, p = w.clock, w.plan
        for peer in self.peers:
            peer.start()
        for job, (owner, at) in enumerate(zip(p.owners, p.starts, strict=True)):
            clock.at(at, self._submit, owner, self.job_ids[job])
        for crash in p.crashes:
            clock.at(crash.at, self._crash, crash)
        for k, cut in enumerate(p.partitions):
            clock.at(cut.start, self._cut, cut, k + 1)
            clock.at(cut.end, self._heal, cut, k + 1)
        for job, at in p.cancels.items():
            clock.at(at, self._cancel, job)

    # --- what the plan injects -------------------------------------------------------------

    def _submit(self, owner: int, job_id: bytes) -> None:
        peer = self.peers[owner]
        if not peer.alive:  # the owner is down: it submits once it is back
            self.world.clock.after(1.0, self._submit, owner, job_id)
            return
        peer.submit(job_id, self.world.scenario.subtasks)

    def _cancel(self, job: int) -> None:
        job_id = self.job_ids[job]
        owner = self.peers[self.world.plan.owners[job]]
        if owner.alive and job_id in owner.jobs:
            owner.cancel(job_id)

    def _crash(self, crash: Crash) -> None:
        peer = self.peers[crash.peer]
        if not peer.alive:
            return
        if crash.torn:  # it dies in its next commit of verdicts, however soon
            peer.tear, peer.tear_armed = crash.down, True
            return
        self._die(crash.peer, crash.down)

    def _die(self, index: int, down: float | None) -> None:
        w = self.world
        peer = self.peers[index]
        peer.crash()
        w.counters.crashes += 1
        self._lost(index, [i for i in range(len(self.peers)) if i != index])
        if down is not None:
            w.clock.after(down, self._restart, index)

    def _restart(self, index: int) -> None:
        self.peers[index].start()
        self.world.counters.restarts += 1
        self._met(index, [i for i in range(len(self.peers)) if i != index])
        self.world.directory.wake_all()  # thieves waiting for work may reach some now

    def _cut(self, cut: Partition, side: int) -> None:
        net = self.world.net
        members = set(cut.members)
        before = [net.side[i] for i in range(len(self.peers))]
        net.cut(cut.members, side)
        self.world.counters.partitions += 1
        for m in cut.members:  # everyone on the other side of the cut, as seen from m, and the other way round
            self._lost(m, [i for i in range(len(self.peers)) if i not in members and before[i] == before[m]])

    def _heal(self, cut: Partition, side: int) -> None:
        net = self.world.net
        healed = [m for m in cut.members if net.side[m] == side]
        net.heal(healed)
        for m in healed:
            self._met(m, [i for i in range(len(self.peers)) if net.side[i] == 0 and i not in healed])
        self.world.directory.wake_all()

    # --- who notices ------------------------------------------------------------------------

    def _lost(self, a: int, others: list[int]) -> None:
        """``a`` and each of ``others`` cannot reach each other any more: their tables and thieves notice."""
        w = self.world
        owners = set(w.job_owner.values())
        for b in others:
            for x, y in ((a, b), (b, a)):
                observer = self.peers[x]
                if not observer.alive:
                    continue
                if observer.table is not None:
                    w.clock.after(DETECT_SECONDS, observer.table.lose, y)
                elif y in owners and observer.holds_work_of(y):
                    w.clock.after(DETECT_SECONDS + GONE_SECONDS, self._gone, x, observer.epoch, y)

    def _gone(self, thief: int, epoch: int, owner: int) -> None:
        peer = self.peers[thief]
        if peer.epoch == epoch and not self.world.net.reachable(thief, owner):
            peer.owner_left(owner)

    def _met(self, a: int, others: list[int]) -> None:
        """``a`` can reach each of ``others`` again: connections open, and the owners' tables hear hellos."""
        w = self.world
        for b in others:
            for x, y in ((a, b), (b, a)):
                table = self.peers[x].table
                if table is not None and w.net.reachable(x, y):
                    w.clock.after(2 * w.net.base_latency(x, y), self._hello, x, self.peers[x].epoch, y)

    def _hello(self, owner: int, epoch: int, peer: int) -> None:
        table = self.peers[owner].table
        if self.peers[owner].epoch == epoch and table is not None and self.world.net.reachable(owner, peer):
            table.meet(peer)

    # --- the end ----------------------------------------------------------------------------

    def _job_ended(self, job_id: bytes) -> None:
        k = self.world.checker
        if len(k.journals) == len(self.job_ids) and all(k.ended(j) for j in self.job_ids):
            self.world.clock.stop()

    def _describe(self, job_id: bytes) -> str:
        owner = self.peers[self.world.job_owner[job_id]]
        job = owner.jobs.get(job_id)
        if job is None:
            return f"its owner, peer {owner.index}, is {'up' if owner.alive else 'down'} without it"
        p = job.machine.progress()
        letters = job.machine.state_letters()
        stuck = [i for i, c in enumerate(letters) if c in "qr"][:10]
        return (f"owner peer {owner.index}: {p.running} running, {p.queued} replicas queued, {p.working} nodes "
                f"working; first undecided: {stuck}")  # fmt: skip

    def _report(self, wall: float) -> Report:
        w = self.world
        s, c, k = w.scenario, w.counters, w.checker
        total = s.subtasks * s.jobs
        undecided = sum(k.undecided(j) for j in k.cancelled)
        messages = dict(sorted(w.net.sent.items()))
        suspect = [(j.job_id, i) for p in self.peers for j in p.journals.values() for i, (_, state) in j.lone.items()
                   if state == "suspect"]  # fmt: skip
        catch = [k.caught_at[p] - t for p, t in k.first_lie.items() if p in k.caught_at]
        return Report(
            seed=w.seed, verify=s.verify, peers=s.peers, jobs=s.jobs, subtasks=total, verdicts=dict(k.kinds),
            undecided=undecided, verified_by={how: n for how, n in sorted(k.verified_by.items()) if n},
            wrong_accepted=k.wrong_accepted,
            wrong_standing=len(k.wrong), suspect_left=len(suspect),
            wrong_suspect=sum(key in k.wrong for key in suspect), liars=len(k.first_lie), liars_caught=len(catch),
            seconds_to_catch=(sum(catch) / len(catch), max(catch)) if catch else (0.0, 0.0), runs=c.runs,
            runs_per_verified=c.runs / max(1, k.kinds["verified"]), credit_fuel=k.credit,
            simulated_seconds=w.clock.now, wall_seconds=wall, events=w.clock.events, messages=messages,
            messages_per_peer_per_subtask=sum(messages.values()) / s.peers / total, lost_messages=w.net.lost,
            presence_publications=w.directory.publications, max_open=c.max_open,
            max_pending_events=w.clock.max_pending, max_outbox=c.max_outbox,
            faults={"crashes": c.crashes, "restarts": c.restarts, "owner restores": c.owner_restores,
                    "torn commits": c.torn_commits, "partitions": c.partitions, "snapshots": c.snapshots,
                    "lost replicas": c.lost_replicas, "replicas added on disagreement": c.added["disagreement"],
                    "spot checks": c.added["spot_check"], "replicas added for untrusted": c.added["untrusted"],
                    "reopened": c.reopened},
            invariant_checks=k.checks, scenario=s.args(),
        )  # fmt: skip
