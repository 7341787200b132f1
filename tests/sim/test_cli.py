"""``python -m meshnode.sim``: a report and status 0, a broken invariant and status 1, bad flags and status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshnode.sim import __main__ as cli
from meshnode.sim import owning

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshnode.sim", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_a_run_prints_its_report() -> None:
    out = run("--peers", "10", "--subtasks", "60", "--crash-fraction", "0.2", "--seed", "2")
    assert out.returncode == 0, out.stderr
    assert "seed 2: 10 peers, 1 job(s), 60 subtasks, fixed verification" in out.stdout
    assert "invariants        held" in out.stdout
    report = json.loads(run("--peers", "10", "--subtasks", "60", "--seed", "2", "--json").stdout)
    assert report["subtasks"] == 60 and report["invariants_held"]


def test_bad_flags_exit_2() -> None:
    assert run("--quorum", "9").returncode == 2
    assert run("--verify", "sometimes").returncode == 2
    assert run("--peers", "many").returncode == 2


def test_a_broken_invariant_exits_1_with_the_command_that_replays_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(owning.JobJournal, "verdicts", lambda self: [])
    assert cli.main(["--peers", "12", "--subtasks", "80", "--owner-crashes", "2", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert "invariant broken" in err
    assert "replay: python -m meshnode.sim --seed 3 --peers 12 --subtasks 80 --owner-crashes 2" in err
