"""What one simulated run did: the figures counted while it ran, and the report made of them at its end."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

__all__ = ["Counters", "Report"]


@dataclass(slots=True)
class Counters:
    """Counted while the mesh runs."""

    runs: int = 0  # runs completed by any peer (a lazy peer's dropped work is not a run)
    own_runs: int = 0  # of which by a job's owner, on its own job
    lost_replicas: int = 0  # ReplicaLost: a holder that never answered
    added: Counter[str] = field(default_factory=Counter)  # ReplicasAdded, by why: disagreement, untrusted, spot_check
    reopened: int = 0  # verdicts decided again: their lone executor was caught lying
    crashes: int = 0
    restarts: int = 0
    owner_restores: int = 0  # jobs rebuilt from a snapshot and a journal
    torn_commits: int = 0  # owners that crashed in the middle of a journal commit
    partitions: int = 0
    snapshots: int = 0
    max_open: int = 0  # the most subtasks open at once at one owner (its window)
    max_outbox: int = 0  # the most results one peer held unacknowledged


@dataclass(slots=True)
class Report:
    """One run, as ``python -m meshnode.sim`` prints it."""

    seed: int
    verify: str
    peers: int
    jobs: int
    subtasks: int  # in all jobs
    verdicts: dict[str, int]  # verified, disputed, and each failure code
    undecided: int  # subtasks of cancelled jobs left undecided
    verified_by: dict[str, int]  # verified verdicts by how: quorum, single+spotcheck, single
    wrong_accepted: int  # verdicts accepting other than the true result, replaced later or not
    wrong_standing: int  # of which still standing at the end
    suspect_left: int  # lone results of finished jobs whose executor was caught lying since (listed, not rerun)
    wrong_suspect: int  # of which wrong
    liars: int  # executors that claimed other than the truth (wrong output or fuel) at least once
    liars_caught: int  # of which a verdict found disagreeing
    seconds_to_catch: tuple[float, float]  # from a liar's first lie to its catch: mean, most
    runs: int
    runs_per_verified: float
    credit_fuel: int
    simulated_seconds: float
    wall_seconds: float
    events: int
    messages: dict[str, int]  # sent, by kind (lost ones too)
    messages_per_peer_per_subtask: float
    lost_messages: int
    presence_publications: int
    max_open: int
    max_pending_events: int
    max_outbox: int
    faults: dict[str, int]  # crashes, restarts, owner restores, torn commits, partitions, lost and added replicas
    invariant_checks: int
    invariants_held: bool = True
    scenario: list[str] = field(default_factory=list)  # its flags

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def text(self) -> str:
        verdicts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.verdicts.items(), key=lambda kv: -kv[1]))
        faults = ", ".join(f"{k} {v:,}" for k, v in self.faults.items() if v)
        busiest = ", ".join(f"{k} {v:,}" for k, v in sorted(self.messages.items(), key=lambda kv: -kv[1])[:6])
        lines = [
            f"seed {self.seed}: {self.peers:,} peers, {self.jobs} job(s), {self.subtasks:,} subtasks, "
            f"{self.verify} verification",
            f"  verdicts          {verdicts}" + (f"; {self.undecided:,} undecided (cancelled)" if self.undecided else ""),
            f"  verified by       " + (", ".join(f"{k} {v:,}" for k, v in sorted(self.verified_by.items())) or "-"),
            f"  wrong accepted    {self.wrong_accepted:,} ({self.wrong_standing:,} standing at the end; "
            f"{self.suspect_left:,} suspect lone results left in finished jobs, {self.wrong_suspect:,} of them wrong)",
            f"  liars             {self.liars} ({self.liars_caught} caught, {self.seconds_to_catch[0]:.1f} s after their "
            f"first lie on average, {self.seconds_to_catch[1]:.1f} s at most)",
            f"  runs              {self.runs:,} ({self.runs_per_verified:.3f} per verified subtask)",
            f"  simulated time    {self.simulated_seconds:,.1f} s",
            f"  wall time         {self.wall_seconds:,.2f} s ({self.events:,} events)",
            f"  messages          {sum(self.messages.values()):,} ({self.messages_per_peer_per_subtask:.4f} per peer "
            f"per subtask; {self.lost_messages:,} lost); {busiest}",
            f"  presence          {self.presence_publications:,} publications",
            f"  in flight at most {self.max_open:,} open subtasks at an owner, {self.max_outbox:,} results in an "
            f"outbox, {self.max_pending_events:,} pending events",
            f"  faults            {faults or 'none'}",
            f"  invariants        {'held' if self.invariants_held else 'BROKEN'} ({self.invariant_checks:,} checks)",
        ]  # fmt: skip
        return "\n".join(lines)
