"""What a simulation injects: the mesh, the job, the network, the faults; and the plan one seed makes of them.

Theory of operation:

A ``Scenario`` is the set of knobs, all plain numbers, with the command-line
flag of each (``args``), so a failing run can be replayed from one line.
``plan`` turns a scenario and a ``random.Random`` into everything decided up
front: each peer's speed, slots, latency and behaviour, which peers own the
jobs, who crashes when and for how long, which peers a partition cuts off and
when it heals, which jobs are cancelled. Everything decided while the mesh runs
(which message is lost, which run cheats) draws from the same random source
afterwards, in event order, so one seed fixes the whole run.

Faults are placed within the time the job would take on a healthy mesh
(``span``), so that they hit it while it runs.

The job owners are honest and always come back from a crash: a job whose owner
is gone for good cannot end, and an owner cheating on its own job cheats
nobody but itself.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Final

from .behaviour import Behaviour

__all__ = ["Crash", "Partition", "Plan", "PeerProfile", "Scenario", "mixed", "plan"]

VERIFY_MODES: Final = ("fixed", "adaptive")


@dataclass(frozen=True, slots=True)
class Scenario:
    """The knobs of one simulation. Times are virtual seconds; fractions are of the peers."""

    peers: int = 20
    slots: int = 2
    subtasks: int = 200  # per job
    jobs: int = 1
    verify: str = "fixed"  # "fixed" (replicas, quorum) or "adaptive" (core/adaptive.py)
    replicas: int = 2  # fixed: runs of each subtask (adaptive: one, or a quorum)
    quorum: int = 2
    max_replicas: int = 5
    min_streak: int = 10  # adaptive: agreements before an executor may run a subtask alone
    spot_floor: float = 0.05  # adaptive: the lowest probability of a spot check
    lease_seconds: float = 30.0
    max_attempts: int = 3
    run_seconds: float = 1.0  # the mean time of one run on a peer of speed 1
    task_timeout: float = 600.0  # the job's time limit per run (no honest run takes longer; it bounds max_hold)
    slow_fraction: float = 0.1
    slow_factor: float = 4.0  # how much longer a slow peer takes
    latency_min: float = 0.0005  # one-way, per peer (a link's is the sum of its two ends' and a factor)
    latency_max: float = 0.01
    jitter: float = 0.5  # each message takes up to this fraction longer
    loss: float = 0.0  # the chance that a message is lost
    reorder: float = 0.0  # the chance that a message is held back up to 20 latencies
    crash_fraction: float = 0.0  # peers (not owners) that crash once, then restart
    leave_fraction: float = 0.0  # peers (not owners) that crash and never come back
    down_min: float = 5.0  # how long a crashed peer stays down
    down_max: float = 60.0
    owner_crashes: int = 0  # crashes of each job's owner; half of them in the middle of a journal commit
    partitions: int = 0
    partition_fraction: float = 0.2  # peers cut off by each partition
    partition_min: float = 10.0
    partition_max: float = 60.0
    wrong_fraction: float = 0.0  # peers that return wrong outputs ...
    wrong_rate: float = 1.0  # ... at this rate
    forger_fraction: float = 0.0  # peers that forge fuel (the right output, another fuel count)
    lazy_fraction: float = 0.0  # peers that take work and never run it
    staller_fraction: float = 0.0  # peers that take work and keep it, renewing its leases, never running it
    colluder_groups: int = 0  # groups that report the same wrong output ...
    colluder_size: int = 2  # ... of this many peers each ...
    collude_rate: float = 1.0  # ... at this rate
    cheat_after: float = 0.0  # byzantine peers behave until then
    task_errors: float = 0.01  # subtasks whose task refuses its input on every honest peer
    cancel: float = 0.0  # the chance that a job is cancelled half way
    rpc_timeout: float = 10.0  # a lost message fails its exchange after this long
    deadline: float = 7200.0  # every job must have ended by then

    def check(self) -> str | None:
        """What is wrong with these knobs, or None."""
        if self.verify not in VERIFY_MODES:
            return f"--verify must be one of {', '.join(VERIFY_MODES)}"
        if min(self.peers, self.slots, self.subtasks, self.jobs, self.max_attempts, self.min_streak) < 1:
            return "peers, slots, subtasks, jobs, max-attempts and min-streak must be at least 1"
        if self.jobs > self.peers:
            return "each job needs its own owner: no more jobs than peers"
        if not 1 <= self.quorum <= self.max_replicas or not 1 <= self.replicas <= self.max_replicas <= 32:
            return "need 1 <= quorum <= max-replicas, 1 <= replicas <= max-replicas <= 32"
        fractions = (
            self.spot_floor, self.slow_fraction, self.loss, self.reorder, self.crash_fraction, self.leave_fraction,
            self.partition_fraction, self.wrong_fraction, self.wrong_rate, self.forger_fraction, self.lazy_fraction,
            self.staller_fraction, self.collude_rate, self.task_errors, self.cancel,
        )  # fmt: skip
        if any(not 0.0 <= f <= 1.0 for f in fractions):
            return "fractions and rates lie in 0..1"
        if self.loss >= 1.0:
            return "with every message lost nothing can happen"
        if min(self.lease_seconds, self.run_seconds, self.task_timeout, self.slow_factor, self.rpc_timeout,
               self.deadline) <= 0:  # fmt: skip
            return "times must be positive"
        if not (0 <= self.latency_min <= self.latency_max and self.down_min <= self.down_max
                and self.partition_min <= self.partition_max):  # fmt: skip
            return "each minimum must be at most its maximum"
        return None

    def span(self) -> float:
        """About how long the jobs take on a healthy mesh: when faults are placed."""
        runs = self.jobs * self.subtasks * max(self.replicas, self.quorum)
        return max(5.0, 1.2 * runs * self.run_seconds / (self.peers * self.slots))

    def args(self) -> list[str]:
        """The command-line flags that give this scenario (only those that differ from the defaults)."""
        out = []
        default = Scenario()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out += [f"--{f.name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
        return out


@dataclass(frozen=True, slots=True)
class PeerProfile:
    speed: float  # time factor of a run: 1 is the mean, a slow peer's is larger
    slots: int
    latency: float  # one-way seconds to the network's core
    behaviour: Behaviour


@dataclass(frozen=True, slots=True)
class Crash:
    at: float
    peer: int
    down: float | None  # seconds until it restarts; None: it never comes back
    torn: bool = False  # in the middle of a journal commit (its next commit of verdicts never happens)


@dataclass(frozen=True, slots=True)
class Partition:
    start: float
    end: float
    members: tuple[int, ...]  # cut off from everyone else until ``end``


@dataclass(slots=True)
class Plan:
    profiles: list[PeerProfile]
    owners: list[int]  # the owner of each job, by peer number
    starts: list[float]  # when each job is submitted
    crashes: list[Crash] = field(default_factory=list)
    partitions: list[Partition] = field(default_factory=list)
    cancels: dict[int, float] = field(default_factory=dict)  # job -> when it is cancelled


def plan(s: Scenario, rng: random.Random) -> Plan:
    """Everything one seed decides before the mesh starts."""
    n = s.peers
    owners = list(range(s.jobs))  # peers 0 .. jobs-1 own one job each
    others = list(range(s.jobs, n))
    order = others[:]
    rng.shuffle(order)
    behaviours: dict[int, Behaviour] = {}

    def take(fraction: float) -> list[int]:
        count = min(len(order), round(fraction * n))
        picked = order[:count]
        del order[:count]
        return picked

    after = s.cheat_after
    for group in range(s.colluder_groups):
        for peer in order[: s.colluder_size]:
            behaviours[peer] = Behaviour("colluder", s.collude_rate, group, after)
        del order[: s.colluder_size]
    for peer in take(s.wrong_fraction):
        behaviours[peer] = Behaviour("wrong", s.wrong_rate, after=after)
    for peer in take(s.forger_fraction):
        behaviours[peer] = Behaviour("forger", 1.0, after=after)
    for peer in take(s.lazy_fraction):
        behaviours[peer] = Behaviour("lazy", after=after)
    for peer in take(s.staller_fraction):
        behaviours[peer] = Behaviour("staller", after=after)
    profiles = []
    for peer in range(n):
        slow = rng.random() < s.slow_fraction
        speed = (s.slow_factor if slow else 1.0) * rng.uniform(0.7, 1.3)
        latency = rng.uniform(s.latency_min, s.latency_max)
        profiles.append(PeerProfile(speed, s.slots, latency, behaviours.get(peer, Behaviour())))
    span = s.span()
    starts = [0.0] + [rng.uniform(0.0, span / 4) for _ in range(s.jobs - 1)]
    out = Plan(profiles, owners, starts)
    crashing = others[:]
    rng.shuffle(crashing)
    down_for_good = round(s.leave_fraction * n)
    for i, peer in enumerate(crashing[: round(s.crash_fraction * n) + down_for_good]):
        down = None if i < down_for_good else rng.uniform(s.down_min, s.down_max)
        out.crashes.append(Crash(rng.uniform(0.05, 0.9) * span, peer, down))
    for job, owner in enumerate(owners):
        for k in range(s.owner_crashes):
            at = out.starts[job] + rng.uniform(0.1, 0.8) * span
            out.crashes.append(Crash(at, owner, rng.uniform(s.down_min, s.down_max) / 4, torn=k % 2 == 1))
    for _ in range(s.partitions):
        start = rng.uniform(0.1, 0.6) * span
        members = tuple(sorted(rng.sample(range(n), max(1, round(s.partition_fraction * n)))))
        out.partitions.append(Partition(start, start + rng.uniform(s.partition_min, s.partition_max), members))
    for job in range(s.jobs):
        if rng.random() < s.cancel:
            out.cancels[job] = out.starts[job] + rng.uniform(0.2, 0.7) * span
    out.crashes.sort(key=lambda c: (c.at, c.peer))
    return out


def mixed(seed: int) -> Scenario:
    """A small scenario with a bit of everything, drawn from ``seed``: what the test suite runs over many seeds.

    10 to 50 peers and a few hundred subtasks, fixed or adaptive verification, with
    crashes, a partition, message loss and reordering, and byzantine peers of every
    kind in some of them.
    """
    rng = random.Random(f"mixed-{seed}")
    peers = rng.randint(10, 50)
    jobs = rng.choice((1, 1, 1, 2))
    byzantine = rng.random() < 0.5
    verify = rng.choice(("fixed", "fixed", "adaptive"))
    quorum = rng.choice((2, 2, 3)) if byzantine or verify == "adaptive" else rng.choice((1, 2, 2, 2, 3))
    replicas = max(quorum, rng.choice((1, 2, 2, 3)))
    drawn = Scenario(
        verify=verify,
        min_streak=rng.choice((2, 3, 5)),  # each peer runs a few dozen subtasks at most: trust comes early
        spot_floor=rng.choice((0.05, 0.2)),
        peers=peers,
        slots=rng.choice((1, 2, 2, 4)),
        subtasks=rng.randint(100, 250) // jobs,  # per job
        jobs=jobs,
        replicas=replicas,
        quorum=quorum,
        max_replicas=max(replicas, rng.choice((3, 5))),
        lease_seconds=rng.choice((10.0, 30.0)),
        run_seconds=rng.choice((0.2, 1.0)),
        loss=rng.choice((0.0, 0.0, 0.01, 0.05)),
        reorder=rng.choice((0.0, 0.05)),
        crash_fraction=rng.choice((0.0, 0.05, 0.1, 0.2)),
        leave_fraction=rng.choice((0.0, 0.0, 0.05)),
        owner_crashes=rng.choice((0, 0, 1, 2)),
        partitions=rng.choice((0, 0, 1, 2)),
        wrong_fraction=rng.choice((0.0, 0.1, 0.2)) if byzantine else 0.0,
        wrong_rate=rng.choice((0.1, 0.5, 1.0)),
        forger_fraction=rng.choice((0.0, 0.05)) if byzantine else 0.0,
        lazy_fraction=rng.choice((0.0, 0.05, 0.1)),
        colluder_groups=rng.choice((0, 1)) if byzantine else 0,
        staller_fraction=rng.choice((0.0, 0.0, 0.0, 0.05)),
        task_timeout=rng.choice((20.0, 60.0)),
        cancel=rng.choice((0.0, 0.0, 0.0, 0.5)),
    )
    # some byzantine peers turn bad only once they may have earned trust
    return dataclasses.replace(drawn, cheat_after=rng.choice((0.0, 0.5, 1.0)) * drawn.span())
