"""``python -m meshnode.sim``: run the simulator from the command line.

    python -m meshnode.sim --peers 50 --subtasks 300 --crash-fraction 0.05 --seed 7
    python -m meshnode.sim --mixed --seeds 200          # the suite's small scenarios, 200 seeds
    python -m meshnode.sim --seed 7 --json               # the report as one JSON line

Every knob of ``Scenario`` is a flag of the same name. A run whose invariants
hold prints its report and exits 0; a broken invariant prints what broke, the
command that replays it and the last events, and exits 1; bad flags exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time

from .scenario import Scenario, mixed
from .simulation import simulate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m meshnode.sim", description="Simulate the mesh on virtual time.")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (the first, with --seeds)")
    p.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on")
    p.add_argument("--mixed", action="store_true", help="each seed's scenario drawn as the test suite draws it")
    p.add_argument("--json", action="store_true", help="print each report as one JSON line")
    for f in dataclasses.fields(Scenario):
        kind = type(f.default)
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, metavar=kind.__name__.upper())
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except BrokenPipeError:
        # the reader went away (`python -m meshnode.sim ... | head`): stop quietly, as a pipeline expects;
        # stdout goes to /dev/null so that the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def run(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    knobs = {f.name: getattr(args, f.name) for f in dataclasses.fields(Scenario)}
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        scenario = mixed(seed) if args.mixed else Scenario(**knobs)
        try:
            report = simulate(scenario, seed)
        except ValueError as exc:
            print(f"python -m meshnode.sim: {exc}", file=sys.stderr)
            return 2
        except AssertionError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(report.to_json() if args.json else report.text(), flush=True)
    if args.seeds > 1 and not args.json:
        print(f"{args.seeds} seeds, every invariant held, {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
