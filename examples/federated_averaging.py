"""Federated averaging (FedAvg) of a logistic regression: each client's data stays in its shard,
the mesh runs the clients' gradient steps, and this machine averages their weights.

    python -m meshnode &
    python examples/federated_averaging.py [--clients 8] [--rounds 10] [--local-steps 5]
                                           [--samples 400] [--features 10] [--lr 0.5] [--seed 1]

The data is made up from the seed (nothing is downloaded): a logistic model with random true
weights labels points drawn around a different centre for each client, so the shards are
non-IID, as federated data is (each client sees another part of the space, and another share
of positives). A held-out set comes from the global distribution. ``--data DIR`` takes the
shards from files instead: ``DIR/client_*.npy`` or ``.csv`` (one shard each, in name order)
and ``DIR/test.npy`` or ``.csv``, each a table whose rows are the features and then the label
(0 or 1).

Each round, every client starts from the global weights and takes ``--local-steps`` full-batch
gradient steps on its own shard with the bundled task tasks_wasm/logreg_step.wasm: one job per
step, one subtask per client, each client going on from its own weights. The weights travel as
exact float64 bytes and the task is deterministic bit for bit, so on a mesh every step is run by
two peers that must agree. This machine then averages the clients' weights, weighted by shard
size (with numpy, which only the machine running this script needs; the peers run only the
WebAssembly task), and prints per round: the training loss of the round's starting weights
(the clients' reported losses, weighted by shard size), the accuracy and log-loss on the
held-out set, the round's wall time and the peers that did its work. Round 0 is the starting
point, all weights zero. The last line compares with a logistic regression trained centrally on
the pooled shards with as many gradient steps (rounds x local steps), in numpy with the same
maths: how close federated training got without moving the data.

``--history FILE`` writes every round's global weights (as exact hex floats) and figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mesh_args import add_mesh_flags, connect

from meshnode import Client, MeshError

TASK = Path(__file__).resolve().parents[1] / "tasks_wasm" / "logreg_step.wasm"
DEFAULTS = {"clients": 8, "samples": 400, "features": 10, "seed": 1}  # of the generated data
TEST_ROWS = 2000
TRUE_NORM = 4.0  # length of the true weight vector: labels are right about 85-90 % of the time
CLIENT_SHIFT = 1.5  # how far each client's centre lies from the global one


class UsageError(Exception):
    """A flag or data file this example cannot use; the message says which and why."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # rows x features, float64
    y: np.ndarray  # rows, 0.0 or 1.0

    @property
    def rows(self) -> int:
        return len(self.y)


# --- data ------------------------------------------------------------------------------------


def generate(clients: int, samples: int, features: int, seed: int) -> tuple[list[Dataset], Dataset]:
    """Non-IID shards and a held-out set, all labelled by one random logistic model."""
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=features)
    true_w *= TRUE_NORM / np.linalg.norm(true_w)
    true_b = rng.normal(scale=0.5)

    def draw(rows: int, centre: np.ndarray) -> Dataset:
        x = rng.normal(size=(rows, features)) + centre
        p = 1.0 / (1.0 + np.exp(-(x @ true_w + true_b)))
        return Dataset(x, (rng.random(rows) < p).astype(np.float64))

    shards = []
    for _ in range(clients):
        direction = rng.normal(size=features)
        shards.append(draw(samples, CLIENT_SHIFT * direction / np.linalg.norm(direction)))
    return shards, draw(TEST_ROWS, np.zeros(features))


def load(directory: Path) -> tuple[list[Dataset], Dataset]:
    """The shards ``DIR/client_*`` and held-out set ``DIR/test`` (``.npy`` or ``.csv``).

    Raises:
        UsageError: a file is missing, unreadable, or not a table of finite features and 0/1 labels.
    """
    if not directory.is_dir():
        raise UsageError(f"--data {directory}: no such directory")
    paths = sorted(p for p in directory.glob("client_*") if p.suffix in (".npy", ".csv"))
    if not paths:
        raise UsageError(f"--data {directory}: no client_*.npy or client_*.csv files")
    tests = [directory / f"test{suffix}" for suffix in (".npy", ".csv") if (directory / f"test{suffix}").exists()]
    if not tests:
        raise UsageError(f"--data {directory}: no test.npy or test.csv (the held-out set)")
    shards = [_read_table(path) for path in paths]
    test = _read_table(tests[0])
    widths = {data.x.shape[1] for data in [*shards, test]}
    if len(widths) != 1:
        raise UsageError(f"--data {directory}: the files have different numbers of features ({sorted(widths)})")
    return shards, test


def _read_table(path: Path) -> Dataset:
    try:
        if path.suffix == ".npy":
            table = np.load(path, allow_pickle=False)
        else:
            with path.open(encoding="utf-8") as f:
                first = f.readline()
            header = any(not _is_number(field) for field in first.split(","))
            table = np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2)
        table = np.asarray(table, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if table.ndim != 2 or table.shape[1] < 2 or table.shape[0] < 1:
        raise UsageError(f"{path}: need a table of at least one row of features then a label, not shape {table.shape}")
    x, y = table[:, :-1], table[:, -1]
    if not np.isfinite(x).all():
        raise UsageError(f"{path}: every feature must be a finite number")
    if not np.isin(y, (0.0, 1.0)).all():
        raise UsageError(f"{path}: the last column, the label, must be 0 or 1")
    return Dataset(np.ascontiguousarray(x), np.ascontiguousarray(y))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- the task's binary format (its top comment) ------------------------------------------------


def encode_records(data: Dataset) -> bytes:
    """A shard as the task's records: each row's features, then its label, as float64 LE."""
    return np.column_stack([data.x, data.y]).astype("<f8").tobytes()


def step_input(lr: float, weights: np.ndarray, data: Dataset, records: bytes) -> bytes:
    """One gradient step's input: "LRS1", rows, features, learning rate, weights (bias last), records."""
    header = b"LRS1" + struct.pack("<IId", data.rows, data.x.shape[1], lr)
    return header + weights.astype("<f8").tobytes() + records


def read_step_output(output: Any, features: int) -> tuple[np.ndarray, float]:
    """The new weights and the shard's mean loss under the old ones."""
    if not isinstance(output, bytes) or len(output) != 8 * (features + 2):
        raise MeshError(f"logreg_step returned {output!r:.60} instead of {features + 2} float64 values")
    values = np.frombuffer(output, "<f8")
    return values[:-1].copy(), float(values[-1])


# --- training ----------------------------------------------------------------------------------


@dataclass
class Round:
    weights: np.ndarray  # the global weights after the round
    train_loss: float  # of the starting weights on every shard, weighted by shard size
    executors: set[str]


def train_round(
    client: Client, policy: dict[str, Any], shards: list[Dataset], records: list[bytes], weights: np.ndarray,
    lr: float, steps: int, label: str,
) -> Round:  # fmt: skip
    """Every client takes ``steps`` gradient steps from ``weights`` on the mesh; then FedAvg."""
    features = len(weights) - 1
    local = [weights] * len(shards)
    start_losses: list[float] = []
    executors: set[str] = set()
    for step in range(steps):
        inputs = [step_input(lr, w, data, r) for w, data, r in zip(local, shards, records, strict=True)]
        job = client.submit(TASK, inputs, label=f"{label} step {step + 1}", **policy)
        results = job.wait()
        if len(results) != len(shards):
            raise MeshError(f"{label} step {step + 1}: the job ended with {len(results)} of {len(shards)} results")
        outputs = []
        for result in results:
            if not result.ok:
                error = result.error
                why = f"{error.code}: {error.message}" if error else result.status
                raise MeshError(f"{label} step {step + 1}: client {result.index} failed ({why})")
            outputs.append(read_step_output(result.output, features))
            executors.update(result.executors)
        local = [w for w, _ in outputs]
        if step == 0:
            start_losses = [loss for _, loss in outputs]
    sizes = [data.rows for data in shards]
    train_loss = sum(n * loss for n, loss in zip(sizes, start_losses, strict=True)) / sum(sizes)
    return Round(fedavg(local, sizes), train_loss, executors)


def fedavg(weights: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """The clients' weights averaged, each counting as many times as its shard has rows:
    (n_1 w_1 + n_2 w_2 + ...) / (n_1 + n_2 + ...), summed in client order."""
    total = np.zeros_like(weights[0])
    for w, n in zip(weights, sizes, strict=True):
        total = total + float(n) * w
    return total / float(sum(sizes))


def centralised(shards: list[Dataset], lr: float, steps: int) -> np.ndarray:
    """Logistic regression on the pooled shards: ``steps`` full-batch gradient steps from zero,
    the same update as the task's (w -= lr * mean gradient of the log-loss)."""
    x = np.concatenate([data.x for data in shards])
    y = np.concatenate([data.y for data in shards])
    w = np.zeros(x.shape[1] + 1)
    for _ in range(steps):
        err = _sigmoid(x @ w[:-1] + w[-1]) - y
        w = w - lr * np.append(x.T @ err, err.sum()) / len(y)
    return w


def evaluate(weights: np.ndarray, data: Dataset) -> tuple[float, float]:
    """Accuracy (predicting 1 where p >= 0.5) and mean log-loss on ``data``."""
    z = data.x @ weights[:-1] + weights[-1]
    accuracy = float(np.mean((z >= 0.0) == (data.y == 1.0)))
    log_loss = float(np.mean(np.logaddexp(0.0, np.where(data.y == 1.0, -z, z))))
    return accuracy, log_loss


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))  # never overflows
    p: np.ndarray = np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
    return p


# --- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, help=f"clients, one shard each (default {DEFAULTS['clients']})")
    p.add_argument("--rounds", type=int, default=10, help="rounds of local training and averaging (default 10)")
    p.add_argument("--local-steps", type=int, default=5, help="gradient steps per client per round (default 5)")
    p.add_argument("--samples", type=int, help=f"rows per client's shard (default {DEFAULTS['samples']})")
    p.add_argument("--features", type=int, help=f"features per row (default {DEFAULTS['features']})")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5)")
    p.add_argument("--seed", type=int, help=f"seed of the generated data (default {DEFAULTS['seed']})")
    p.add_argument("--data", type=Path, metavar="DIR", help="shards from DIR/client_*.npy|csv and DIR/test.npy|csv")
    p.add_argument("--history", type=Path, metavar="FILE", help="write each round's weights and figures as JSON")
    add_mesh_flags(p)
    args = p.parse_args(argv)
    generated = [name for name in DEFAULTS if getattr(args, name) is not None]
    if args.data is not None and generated:
        raise UsageError(f"--data takes the shards from files: drop --{generated[0]}")
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("clients", "rounds", "local_steps", "samples", "features"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0.0):
        raise UsageError(f"--lr must be a positive number, not {args.lr}")
    return args


def short(peer: str) -> str:
    return "…" + peer[-6:]


def describe_peers(peers: set[str]) -> str:
    names = ", ".join(short(peer) for peer in sorted(peers)[:4])
    return f"{len(peers)}: {names}" + (f" +{len(peers) - 4}" if len(peers) > 4 else "")


def history_entry(number: int, weights: np.ndarray, train_loss: float | None, test: Dataset, seconds: float,
                  peers: set[str]) -> dict[str, Any]:  # fmt: skip
    accuracy, log_loss = evaluate(weights, test)
    return {
        "round": number, "weights": [float(w).hex() for w in weights], "train_loss": train_loss,
        "accuracy": accuracy, "log_loss": log_loss, "seconds": round(seconds, 3), "peers": sorted(peers),
    }  # fmt: skip


def print_round(entry: dict[str, Any]) -> None:
    """One line of the table (round 0, the starting point, comes after the table's head)."""
    if entry["round"] == 0:
        print(f"{'round':>5}  {'train loss':>10}  {'accuracy':>8}  {'log-loss':>8}  {'time':>6}  peers")
        loss, seconds, peers = "-", "-", "-"
    else:
        loss, seconds = f"{entry['train_loss']:.4f}", f"{entry['seconds']:.1f}s"
        peers = describe_peers(set(entry["peers"]))
    figures = f"{entry['accuracy']:>8.3f}  {entry['log_loss']:>8.4f}"
    print(f"{entry['round']:>5}  {loss:>10}  {figures}  {seconds:>6}  {peers}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.data is not None:
        shards, test = load(args.data)
        source = f"from {args.data}"
    else:
        shards, test = generate(args.clients, args.samples, args.features, args.seed)
        source = f"generated from seed {args.seed}, non-IID"
    features = test.x.shape[1]
    records = [encode_records(data) for data in shards]
    pooled = sum(data.rows for data in shards)
    client, policy = connect(args)
    print(f"federated averaging: {len(shards)} clients ({pooled:,} rows, {features} features, {source}), "
          f"{args.rounds} rounds of {args.local_steps} local steps, lr {args.lr}; "
          f"held-out set {test.rows:,} rows")  # fmt: skip
    if not policy:
        print("verified: adaptive replication (two peers agree on each step until a peer has earned trust)")
    elif policy["replicas"] > 1:
        print(f"verified: each client's step runs on {policy['replicas']} peers that must agree")
    else:
        print("unverified: each client's step runs once (--replicas 1, the default when this node hears no peer)")

    weights = np.zeros(features + 1)
    history = [history_entry(0, weights, None, test, 0.0, set())]
    print_round(history[0])
    executors: set[str] = set()
    started = time.perf_counter()
    with client:
        for number in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            done = train_round(client, policy, shards, records, weights, args.lr, args.local_steps,
                               f"fedavg round {number}")  # fmt: skip
            weights = done.weights
            executors |= done.executors
            history.append(history_entry(number, weights, done.train_loss, test, time.perf_counter() - t0,
                                         done.executors))  # fmt: skip
            print_round(history[-1])
    elapsed = time.perf_counter() - started
    steps = args.rounds * args.local_steps
    on = f"{len(executors)} peer{'s' if len(executors) != 1 else ''}"
    print(f"{steps * len(shards)} subtasks in {steps} jobs on {on}, {elapsed:.1f} s")

    final = history[-1]
    central_accuracy, central_loss = evaluate(centralised(shards, args.lr, steps), test)
    if args.history is not None:
        central = {"steps": steps, "accuracy": central_accuracy, "log_loss": central_loss}
        args.history.write_text(json.dumps({"rounds": history, "centralised": central}, indent=1) + "\n",
                                encoding="utf-8")  # fmt: skip
    print(f"FedAvg after {args.rounds} rounds: accuracy {final['accuracy']:.3f}, log-loss {final['log_loss']:.4f}; "
          f"centralised, {steps} steps on the pooled {pooled:,} rows: accuracy {central_accuracy:.3f}, "
          f"log-loss {central_loss:.4f} (FedAvg {final['accuracy'] - central_accuracy:+.3f} accuracy, "
          f"{final['log_loss'] - central_loss:+.4f} log-loss)")  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except (MeshError, UsageError) as exc:
        sys.exit(f"federated_averaging.py: {exc}")
