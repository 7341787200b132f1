"""examples/federated_averaging.py against a real node: it learns, and its weights are exactly
those of a numpy reimplementation of the task's step and of FedAvg."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meshnode import Client
from tests.cli.nodes import NodeProcess

from .conftest import EXAMPLES, run_example

EXAMPLE = "federated_averaging.py"

# The task's exp and log, built from + - * / alone (tasks_wasm/logreg_step.c, top comment).
INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
LN2_HI = float.fromhex("0x1.62e42feep-1")
LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
LN2 = float.fromhex("0x1.62e42fefa39efp-1")
SQRT2 = float.fromhex("0x1.6a09e667f3bcdp+0")


def exp_neg(t: np.ndarray) -> np.ndarray:
    k = np.floor(t * INV_LN2 + 0.5)
    r = (t - k * LN2_HI) - k * LN2_LO
    q = np.full_like(t, 1.0 / math.factorial(13))
    for i in range(12, -1, -1):
        q = q * r + 1.0 / math.factorial(i)
    underflow = ~(t >= -708.0)
    return np.where(underflow, 0.0, np.ldexp(q, np.where(underflow, 0, k).astype(np.int64)))


def log_1_2(v: np.ndarray) -> np.ndarray:
    halve = v > SQRT2
    f = np.where(halve, v * 0.5, v)
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    q = np.full_like(v, 1.0 / 25.0)
    for i in range(11, -1, -1):
        q = q * z + 1.0 / (2 * i + 1)
    y = (2.0 * s) * q
    log: np.ndarray = np.where(halve, LN2 + y, y)
    return log


def logreg_step(lr: float, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The task's step, each operation in its order; sums over rows are sequential (cumsum)."""
    z = np.zeros(len(y))
    for j in range(x.shape[1]):
        z = z + w[j] * x[:, j]
    z = z + w[-1]
    e = exp_neg(-np.abs(z))
    p = np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
    loss = np.maximum(np.where(y == 1.0, -z, z), 0.0) + log_1_2(1.0 + e)
    err = p - y
    g = np.array([np.cumsum(err * x[:, j])[-1] for j in range(x.shape[1])] + [np.cumsum(err)[-1]])
    return w - lr * (g / len(y)), float(np.cumsum(loss)[-1] / len(y))


def fedavg_rounds(shards: list[tuple[np.ndarray, np.ndarray]], lr: float, rounds: int, steps: int) -> list[np.ndarray]:
    """The global weights after each round: local steps from the global weights, then
    (n_1 w_1 + n_2 w_2 + ...) / (n_1 + n_2 + ...) in client order."""
    weights = np.zeros(shards[0][0].shape[1] + 1)
    history = []
    for _ in range(rounds):
        local = []
        for x, y in shards:
            w = weights
            for _ in range(steps):
                w, _loss = logreg_step(lr, w, x, y)
            local.append(w)
        total = np.zeros_like(weights)
        for w, (_x, y) in zip(local, shards, strict=True):
            total = total + float(len(y)) * w
        weights = total / float(sum(len(y) for _x, y in shards))
        history.append(weights)
    return history


def weights_of(entry: dict[str, object]) -> np.ndarray:
    hexes = entry["weights"]
    assert isinstance(hexes, list)
    return np.array([float.fromhex(h) for h in hexes])


def test_generated_non_iid_shards_learn_and_approach_central_training(node: NodeProcess, tmp_path: Path) -> None:
    ran = run_example(EXAMPLE, "--clients", "4", "--rounds", "4", "--local-steps", "2", "--samples", "200",
                      "--features", "5", "--history", "history.json", node=node, cwd=tmp_path)  # fmt: skip
    rounds = json.loads((tmp_path / "history.json").read_text())["rounds"]
    central = json.loads((tmp_path / "history.json").read_text())["centralised"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3, 4]
    assert rounds[0]["weights"] == [float(0).hex()] * 6 and rounds[0]["log_loss"] == pytest.approx(math.log(2))
    assert rounds[-1]["accuracy"] > max(rounds[0]["accuracy"], 0.5) and rounds[-1]["accuracy"] > 0.8
    losses = [r["train_loss"] for r in rounds[1:]]
    assert losses[0] == pytest.approx(math.log(2)) and losses == sorted(losses, reverse=True)
    assert central["steps"] == 8 and abs(rounds[-1]["accuracy"] - central["accuracy"]) < 0.05
    with Client(node.data_dir) as client:
        assert all(r["peers"] == [client.node()["peer_id"]] for r in rounds[1:])
    assert "32 subtasks in 8 jobs on 1 peer" in ran.stdout
    assert f"FedAvg after 4 rounds: accuracy {rounds[-1]['accuracy']:.3f}" in ran.stdout


def test_weights_are_those_of_the_task_step_and_fedavg_bit_for_bit(node: NodeProcess, tmp_path: Path) -> None:
    # Unequal shards (so the averaging's weights matter), one of them CSV with a header.
    rng = np.random.default_rng(7)
    true_w = np.array([2.0, -1.5, 0.5, 1.0])
    shards = []
    for number, (rows, shift) in enumerate([(40, -1.0), (90, 0.0), (130, 1.5)]):
        x = rng.normal(size=(rows, 4)) + shift
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(x @ true_w - 0.3)))).astype(np.float64)
        shards.append((x, y))
        table = np.column_stack([x, y])
        if number == 1:
            np.savetxt(tmp_path / f"client_{number}.csv", table, fmt="%.17g", delimiter=",", header="a,b,c,d,label",
                       comments="")  # fmt: skip
        else:
            np.save(tmp_path / f"client_{number}.npy", table)
    test_x = rng.normal(size=(300, 4))
    test_y = (test_x @ true_w - 0.3 > 0.0).astype(np.float64)
    np.save(tmp_path / "test.npy", np.column_stack([test_x, test_y]))

    run_example(EXAMPLE, "--data", str(tmp_path), "--rounds", "2", "--local-steps", "3", "--lr", "0.7",
                "--history", "history.json", node=node, cwd=tmp_path)  # fmt: skip
    rounds = json.loads((tmp_path / "history.json").read_text())["rounds"]
    expected = fedavg_rounds(shards, 0.7, rounds=2, steps=3)
    for entry, weights in zip(rounds[1:], expected, strict=True):
        assert entry["weights"] == [float(w).hex() for w in weights], f"round {entry['round']}"
        z = test_x @ weights[:-1] + weights[-1]
        assert entry["accuracy"] == np.mean((z >= 0.0) == (test_y == 1.0))
        assert entry["log_loss"] == pytest.approx(np.mean(np.logaddexp(0.0, np.where(test_y == 1.0, -z, z))), rel=1e-12)
    # Round 2's training loss is that of round 1's weights on every shard, weighted by shard size.
    losses = [logreg_step(0.7, expected[0], x, y)[1] for x, y in shards]
    assert rounds[2]["train_loss"] == pytest.approx(np.average(losses, weights=[40, 90, 130]), rel=1e-12)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clients", "0"], "--clients must be at least 1, not 0"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--data", "no-such-dir"], "no such directory"),
        (["--data", ".", "--seed", "3"], "drop --seed"),
    ],
)
def test_bad_flags_give_a_one_line_error(node: NodeProcess, tmp_path: Path, flags: list[str], message: str) -> None:
    command = [sys.executable, str(EXAMPLES / EXAMPLE), *flags, "--data-dir", str(node.data_dir)]
    ran = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode != 0 and ran.stdout == ""
    assert ran.stderr.count("\n") == 1 and message in ran.stderr
