"""The simulator at scale: 1,000 peers, one 100,000-subtask job, crashes and a partition, all invariants checked.

    python benchmarks/simulate.py [--peers 1000] [--subtasks 100000] [--verify fixed adaptive] [--seed 1]

One run per verification mode (``meshnode.sim``, the real core state machines on
virtual time): replicas 2 (quorum 2) and adaptive replication (quorum 2 when a
quorum is needed), with 5 % of the peers crashing once (and restarting), the job
owner crashing twice (once in the middle of a journal commit), a partition cutting
off a fifth of the mesh and healing mid-job, and 0.1 % of messages lost. Prints a
Markdown table: simulated time, wall time (and events per second of it),
messages per peer per subtask, runs per verified subtask, and whether every
invariant held. ``--profile`` prints where the wall time went.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshnode.sim import Report, Scenario, simulate  # noqa: E402


def scenario(peers: int, subtasks: int, verify: str) -> Scenario:
    return Scenario(
        peers=peers, subtasks=subtasks, verify=verify, replicas=2, quorum=2, max_replicas=5,
        crash_fraction=0.05, owner_crashes=2, partitions=1, partition_fraction=0.2, partition_min=20.0,
        partition_max=40.0, loss=0.001, deadline=86400.0,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", type=int, default=1000)
    p.add_argument("--subtasks", type=int, default=100_000)
    p.add_argument("--verify", nargs="+", default=["fixed", "adaptive"], choices=["fixed", "adaptive"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="print the 25 functions that took the most time")
    args = p.parse_args()
    rows = []
    for verify in args.verify:
        s = scenario(args.peers, args.subtasks, verify)
        print(f"running: python -m meshnode.sim --seed {args.seed} {' '.join(s.args())}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        held, report = True, None
        profiler = cProfile.Profile() if args.profile else None
        try:
            if profiler is not None:
                profiler.enable()
            report = simulate(s, args.seed)
        except AssertionError as exc:
            held = False
            print(exc, file=sys.stderr)
        finally:
            if profiler is not None:
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        wall = time.perf_counter() - started
        if report is not None:
            print(report.text(), file=sys.stderr, flush=True)
        rows.append((verify, report, wall, held))
    print(table(args.peers, args.subtasks, rows))


def table(peers: int, subtasks: int, rows: list[tuple[str, Report | None, float, bool]]) -> str:
    lines = [
        f"{peers:,} peers, one {subtasks:,}-subtask job, 5 % of peers crashing, the owner crashing twice, "
        "a partition of a fifth of the mesh healing mid-job, 0.1 % of messages lost:",
        "",
        "| verification | simulated time | wall time | events | events/s | messages per peer per subtask "
        "| runs per verified subtask | verdicts | invariants |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for verify, r, wall, held in rows:
        if r is None:
            lines.append(f"| {verify} | | {wall:,.0f} s | | | | | | **broken** |")
            continue
        verdicts = ", ".join(f"{k} {v:,}" for k, v in sorted(r.verdicts.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {verify} | {r.simulated_seconds:,.0f} s | {wall:,.0f} s | {r.events:,} | {r.events / wall:,.0f} "
            f"| {r.messages_per_peer_per_subtask:.4f} | {r.runs_per_verified:.3f} | {verdicts} "
            f"| {'held' if held else '**broken**'} ({r.invariant_checks:,} checks) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
