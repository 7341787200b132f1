"""One seed gives one run: the same report twice, in this process and in another with other hash seeds."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from meshnode.sim import Report, mixed, simulate

ROOT = Path(__file__).resolve().parents[2]
SEED = 85  # a mixed scenario: adaptive, with crashes, a torn commit, partitions and lost messages (checked below)


def fingerprint(report: Report) -> dict[str, object]:
    figures = dataclasses.asdict(report)
    del figures["wall_seconds"]  # the only figure read off the wall clock
    return figures


def test_a_seed_replays_exactly() -> None:
    scenario = mixed(SEED)
    first = simulate(scenario, SEED)
    assert first.verify == "adaptive" and first.faults["torn commits"] and first.faults["partitions"] and first.lost_messages
    assert fingerprint(simulate(scenario, SEED)) == fingerprint(first)
    assert fingerprint(simulate(scenario, SEED + 1)) != fingerprint(first)


def test_a_seed_replays_in_another_process_whatever_its_hash_seed() -> None:
    here = fingerprint(simulate(mixed(SEED), SEED))
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "meshnode.sim", "--mixed", "--seed", str(SEED), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        there = json.loads(out.stdout)
        del there["wall_seconds"]
        assert there == json.loads(json.dumps(here))
