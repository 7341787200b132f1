"""The simulator at scale: 1,000 peers, one 100,000-subtask job, crashes and a partition, all invariants checked.

    python benchmarks/simulate.py [--peers 1000] [--subtasks 100000] [--verify fixed adaptive] [--seed 1]
    python benchmarks/simulate.py --safety [--seed 1]

One run per verification mode (``meshnode.sim``, the real core state machines on
virtual time): replicas 2 (quorum 2) and adaptive replication (quorum 2 when a
quorum is needed), with 5 % of the peers crashing once (and restarting), the job
owner crashing twice (once in the middle of a journal commit), a partition cutting
off a fifth of the mesh and healing mid-job, and 0.1 % of messages lost. Prints a
Markdown table: simulated time, wall and CPU time (and events per second of
CPU), messages per peer per subtask, runs per verified subtask, and whether every
invariant held. ``--profile`` prints where the time went.

``--safety`` measures what byzantine peers get through, under replicas 2 and
under adaptive replication: one liar among 5 peers, 25 among 100, and 5 groups
of 5 colluders among 100, lying at 1 %, 10 %, 50 % and 100 % of their runs once
the first minute of honest work has earned them trust; the wrong results left in
the finished job, how many were ever accepted, how many liars were caught and
how long after their first lie.
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
    p.add_argument("--safety", action="store_true", help="the byzantine sweep instead of the run at scale")
    args = p.parse_args()
    if args.safety:
        print(safety(args.seed))
        return
    rows = []
    for verify in args.verify:
        s = scenario(args.peers, args.subtasks, verify)
        print(f"running: python -m meshnode.sim --seed {args.seed} {' '.join(s.args())}", file=sys.stderr, flush=True)
        started, cpu = time.perf_counter(), time.process_time()
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
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        if report is not None:
            print(report.text(), file=sys.stderr, flush=True)
        rows.append((verify, report, wall, cpu, held))
    print(table(args.peers, args.subtasks, rows))


def table(peers: int, subtasks: int, rows: list[tuple[str, Report | None, float, float, bool]]) -> str:
    lines = [
        f"{peers:,} peers, one {subtasks:,}-subtask job, 5 % of peers crashing, the owner crashing twice, "
        "a partition of a fifth of the mesh healing mid-job, 0.1 % of messages lost:",
        "",
        "| verification | simulated time | wall time | CPU time | events | events per CPU second "
        "| messages per peer per subtask | runs per verified subtask | verdicts | invariants |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for verify, r, wall, cpu, held in rows:
        if r is None:
            lines.append(f"| {verify} | | {wall:,.0f} s | {cpu:,.0f} s | | | | | | **broken** |")
            continue
        verdicts = ", ".join(f"{k} {v:,}" for k, v in sorted(r.verdicts.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {verify} | {r.simulated_seconds:,.0f} s | {wall:,.0f} s | {cpu:,.0f} s | {r.events:,} "
            f"| {r.events / cpu:,.0f} | {r.messages_per_peer_per_subtask:.4f} | {r.runs_per_verified:.3f} | {verdicts} "
            f"| {'held' if held else '**broken**'} ({r.invariant_checks:,} checks) |"
        )
    return "\n".join(lines)


RATES = (0.01, 0.1, 0.5, 1.0)


def catch(r: Report) -> str:
    return f"{r.seconds_to_catch[0]:.1f} / {r.seconds_to_catch[1]:.1f}" if r.liars_caught else "-"
MESHES = (  # label, peers, subtasks, knobs
    ("1 liar of 5", 5, 3000, {"wrong_fraction": 0.2}),
    ("25 liars of 100", 100, 30000, {"wrong_fraction": 0.25}),
    ("5 x 5 colluders of 100", 100, 30000, {"colluder_groups": 5, "colluder_size": 5}),
)


def safety(seed: int) -> str:
    lines = [
        "Byzantine peers honest for the first 60 s, then lying at the rate given; wrong results left in the "
        "finished job (and ever accepted), liars caught and the seconds from a liar's first lie to its catch "
        "(mean / most), runs per verified subtask:",
        "",
        "| mesh | rate | replicas 2: wrong left (ever) | caught | adaptive: wrong left (ever) | caught "
        "| seconds to catch | runs per verified subtask (replicas 2 / adaptive) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, peers, subtasks, knobs in MESHES:
        for rate in RATES:
            rates = {"collude_rate": rate} if "colluder_groups" in knobs else {"wrong_rate": rate}
            got = {}
            for verify in ("fixed", "adaptive"):
                s = Scenario(peers=peers, subtasks=subtasks, verify=verify, cheat_after=60.0, task_errors=0.0,
                             **knobs, **rates)  # fmt: skip
                print(f"running: python -m meshnode.sim --seed {seed} {' '.join(s.args())}", file=sys.stderr, flush=True)
                got[verify] = simulate(s, seed)
            f, a = got["fixed"], got["adaptive"]
            lines.append(
                f"| {label} | {rate:.0%} | {f.wrong_standing / f.subtasks:.2%} ({f.wrong_accepted:,}) "
                f"| {f.liars_caught}/{f.liars} | {a.wrong_standing / a.subtasks:.2%} ({a.wrong_accepted:,}) "
                f"| {a.liars_caught}/{a.liars} | {catch(a)} "
                f"| {f.runs_per_verified:.2f} / {a.runs_per_verified:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
