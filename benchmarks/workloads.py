"""The five workload examples at realistic sizes, each against the obvious alternative on this machine.

    python benchmarks/workloads.py [--two-nodes] [--seed 1]

Starts a node of its own (``python -m meshnode`` on loopback, a temporary data dir, 2 slots; with
``--two-nodes`` a second such process bootstrapped to it, so the examples run every subtask on both
with replicas 2), then runs each example as a user would, ``python examples/<name>.py ...
--data-dir <the node's>``, at a realistic size, and the alternative a user would otherwise reach
for, in the same sitting:

- matmul, 1000x1000 @ 1000x1000 (``--random``): numpy's ``A @ B`` (BLAS), the same tiles as numpy
  products in ``multiprocessing.Pool(2)`` (one BLAS thread each), and the same wasm tiles in
  ``Pool(2)`` through ``meshnode.Sandbox`` (the task without the mesh);
- mandelbrot, 2048x2048 in 256 tiles: ``python -m meshnode exec`` of the same tiles (2 slots, no
  mesh), the same wasm in ``Pool(2)`` through ``Sandbox``, and numpy, vectorised, in one process;
- predict_structure, a FASTA of 5,000 random sequences of 50-500 residues: ``meshnode exec``;
- audit_passwords, 1,000,000 candidates against 10 SHA-256 targets (4 of them in the list), and
  the first 5,000 against 2 PBKDF2 targets at 1,000 iterations (a run of its own: the example
  hashes every candidate against every target group): hashlib in ``Pool(2)``;
- federated_averaging with its defaults (50 jobs of 8 subtasks, one after another): the same
  FedAvg in numpy in this process.

Ratio = meshnode / alternative (over 1: meshnode is slower). A command is compared with a command
(``meshnode exec``: the wall time from start to exit, interpreter start-up included, as the
example's); code that runs in this process is compared with the example's own figure for its job
(from submitting to the last result, as it prints it), and pools are started and warmed up before
the clock starts. Every example and ``exec`` has run once at a tiny size first, so the modules are
compiled. Each workload runs once (a second run on the same node would hit its result cache), and
each result is checked against its alternative. Prints a Markdown report; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TASKS = ROOT / "tasks_wasm"
sys.path.insert(0, str(EXAMPLES))

from meshnode import Client, Sandbox  # noqa: E402
from meshnode.config import DEFAULT_LIMITS  # noqa: E402

SLOTS = 2
LOOPBACK = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--slots", str(SLOTS)]
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PASSWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
PBKDF2_ITERATIONS = 1000
PBKDF2_CANDIDATES = 5000


class ExampleFailed(Exception):
    """An example (or ``exec``) exited non-zero; the message is the command and its last stderr line."""


# --- the node and the commands ---------------------------------------------------------------


@contextmanager
def node_process(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A ``python -m meshnode`` process on ``data_dir``, up once its api.json names it; its log beside it."""
    log = data_dir.parent / f"{data_dir.name}.stderr"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "meshnode", "run", "--data-dir", str(data_dir), *LOOPBACK, *extra],
                                stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
        try:
            until(lambda: api_pid(data_dir) == proc.pid, f"node {data_dir.name} up", proc, log)
            yield proc, log
        finally:
            proc.terminate()
            proc.wait(30)


def api_pid(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "api.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or being written


def dial_addr(log: Path) -> str:
    """The address the node logged it listens on."""
    for line in log.read_text(errors="replace").splitlines():
        if "listening" in line:
            return line.split()[-1]
    raise RuntimeError(f"no 'listening' line in {log}")


def until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout} s (exit {proc.poll()}):\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def command(args: list[str], cwd: Path) -> tuple[float, str]:
    """Run a command; its wall time and stdout.

    Raises:
        ExampleFailed: it exited non-zero.
    """
    start = time.perf_counter()
    ran = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if ran.returncode != 0:
        shown = " ".join(a if len(a) < 60 else "…" + a[-40:] for a in args)
        last = (ran.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise ExampleFailed(f"`{shown}` exited {ran.returncode}: {last}")
    return wall, ran.stdout


@dataclass
class Run:
    """One example run: the command's wall time and what the example printed about its job."""

    wall: float
    seconds: float  # the example's own figure: submit to the last result
    subtasks: int
    peers: int
    stdout: str


def example(name: str, args: list[str], data_dir: Path, cwd: Path) -> Run:
    wall, out = command([sys.executable, str(EXAMPLES / name), *args, "--data-dir", str(data_dir)], cwd)
    # every example prints one summary line: "N subtasks ... on P peers ... in S s" (fedavg: ", S s")
    line = next(line for line in out.splitlines() if re.search(r"\d subtasks\b", line))

    def number(pattern: str) -> str:
        found = re.search(pattern, line)
        if found is None:
            raise ExampleFailed(f"{name}: no {pattern!r} in its summary line {line!r}")
        return found[1].replace(",", "")

    return Run(wall, float(number(r"(?:in|,) ([\d.]+) s\b")), int(number(r"([\d,]+) subtasks\b")),
               int(number(r"\bon ([\d,]+) peers?\b")), out)  # fmt: skip


def meshnode_exec(task: str, inputs: Path, output: Path, data_dir: Path, cwd: Path) -> float:
    """``python -m meshnode exec`` on this machine's 2 slots; its wall time."""
    args = [sys.executable, "-m", "meshnode", "exec", str(TASKS / task), "--input-jsonl", str(inputs),
            "--output", str(output), "--slots", str(SLOTS), "--data-dir", str(data_dir)]  # fmt: skip
    return command(args, cwd)[0]


def exec_outputs(path: Path) -> list[Any]:
    """The outputs of ``exec``'s JSON Lines, in input order (bytes come as {"base64": ...})."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert all(r["status"] == "ok" for r in records), "an exec subtask failed"
    out = [r["output"] for r in sorted(records, key=lambda r: r["index"])]
    return [base64.b64decode(o["base64"]) if isinstance(o, dict) and "base64" in o else o for o in out]


# --- pools: started and warmed up before any clock starts ----------------------------------------

_sandbox: Any = None
_module: Any = None
_targets: Any = None


def _open_sandbox(task: str) -> None:
    global _sandbox, _module
    _sandbox = Sandbox().__enter__()  # open for the life of the worker, as a node's slot keeps one
    _module = _sandbox.load((TASKS / task).read_bytes())


def _run_wasm(data: bytes) -> bytes:
    outcome = _sandbox.run_sync(_module, data, DEFAULT_LIMITS)
    if outcome.output is None:
        raise RuntimeError(f"the task failed: {outcome.error}")
    return bytes(outcome.output)


def _set_targets(targets: Any) -> None:
    global _targets
    _targets = targets


def _ready(_: int) -> int:
    """The short sleep spreads a batch over both workers."""
    time.sleep(0.05)
    return os.getpid()


@contextmanager
def pool(initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
         env: dict[str, str] | None = None) -> Iterator[Pool]:  # fmt: skip
    """``multiprocessing.Pool(2)``, spawned (a wasmtime engine in a child forked from a process that
    has used wasmtime can hang), each worker started before this returns. ``env``: set while the
    workers start (BLAS reads its thread count once, at import)."""
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        with multiprocessing.get_context("spawn").Pool(SLOTS, initializer, initargs) as started:
            pids: set[int] = set()
            while len(pids) < SLOTS:
                pids.update(started.map(_ready, range(4 * SLOTS), chunksize=1))
            yield started
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# --- the report -------------------------------------------------------------------------------


@dataclass
class Alternative:
    name: str
    seconds: float
    basis: str  # "job": compared with the example's job figure; "command": with its wall time


@dataclass
class Workload:
    name: str
    size: str
    run: Run | None = None
    alternatives: list[Alternative] = field(default_factory=list)
    check: str = ""
    failure: str = ""


def report(workloads: list[Workload], load: tuple[float, float], two_nodes: bool) -> None:
    cores = len(os.sched_getaffinity(0))
    mesh = ("two nodes (two processes), 2 slots each; the examples run every subtask on both (replicas 2)"
            if two_nodes else "one node, 2 slots; the examples run every subtask once (replicas 1)")  # fmt: skip
    print(f"{cores} cores, 1-minute load average {load[0]:.2f} at the start and {load[1]:.2f} at the end; {mesh}\n")
    print("| workload | size | subtasks | example: command wall | example: its job | alternative | alternative wall "
          "| **ratio** (meshnode ÷ alternative) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for w in workloads:
        if w.run is None:
            print(f"| {w.name} | {w.size} | **failed**: {w.failure} | | | | | |")
            continue
        peers = f" on {w.run.peers} peers" if w.run.peers != 1 else ""
        first = f"| {w.name} | {w.size} | {w.run.subtasks:,}{peers} | {w.run.wall:.2f} s | {w.run.seconds:.2f} s"
        for i, alt in enumerate(w.alternatives):
            mine = w.run.seconds if alt.basis == "job" else w.run.wall
            lead = first if i == 0 else "| | | | |"
            ratio = mine / alt.seconds
            print(f"{lead} | {alt.name} | {alt.seconds:.3f} s | **{ratio:.{0 if ratio >= 10 else 2}f}** ({alt.basis}) |")
    print()
    for w in workloads:
        if w.check:
            print(f"- {w.name}: {w.check}")
        if w.failure and w.run is not None:
            print(f"- {w.name}: **failed**: {w.failure}")


# --- the workloads ----------------------------------------------------------------------------


@dataclass
class Sitting:
    data_dir: Path  # the node's
    exec_dir: Path  # exec's own data dir (its identity and compiled modules)
    work: Path  # files, and the examples' working directory


def matmul(s: Sitting) -> Workload:
    import matmul as ex  # examples/matmul.py

    w = Workload("matmul", "1000x1000 @ 1000x1000")
    w.run = example("matmul.py", ["--random", "1000", "1000", "1000", "--seed", "1", "-o", "C.npy"], s.data_dir, s.work)
    a, b, c = (np.load(s.work / name) for name in ("A.npy", "B.npy", "C.npy"))
    side = int(re.search(r"tiles up to (\d+)x", w.run.stdout)[1])  # type: ignore[index]
    tiles = ex.tiles_of(a.shape[0], b.shape[1], side)

    runs = [timed(lambda: a @ b)[0] for _ in range(5)]  # 30-odd ms: the median of five
    w.alternatives.append(Alternative("numpy `A @ B` (OpenBLAS, its 2 threads; median of 5)", statistics.median(runs), "job"))

    def assemble(blocks: list[np.ndarray]) -> np.ndarray:
        out = np.empty((a.shape[0], b.shape[1]))
        for t, block in zip(tiles, blocks, strict=True):
            out[t.row0 : t.row0 + t.rows, t.col0 : t.col0 + t.cols] = block
        return out

    with pool(env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}) as workers:
        parts = lambda: [(a[t.row0 : t.row0 + t.rows], b[:, t.col0 : t.col0 + t.cols]) for t in tiles]  # noqa: E731
        seconds, tiled = timed(lambda: assemble(workers.starmap(np.matmul, parts(), chunksize=1)))
    w.alternatives.append(Alternative(f"numpy tile products in `Pool(2)`, 1 BLAS thread each ({len(tiles)} tiles)",
                                      seconds, "job"))  # fmt: skip
    with pool(_open_sandbox, ("matmul_tile.wasm",)) as workers:

        def in_sandbox() -> np.ndarray:
            outputs = workers.map(_run_wasm, (ex.tile_input(a, b, t) for t in tiles), chunksize=1)
            return assemble([np.frombuffer(o, "<f8").reshape(t.rows, t.cols) for t, o in zip(tiles, outputs)])

        seconds, wasm = timed(in_sandbox)
    w.alternatives.append(Alternative("the same wasm tiles in `Pool(2)` via `Sandbox` (no mesh)", seconds, "job"))
    difference = ex.relative_difference(a, b, c)
    w.check = (f"C's largest difference from numpy's `A @ B`, relative to \\|A\\| @ \\|B\\|: {difference:.2g}; the Pool's "
               f"wasm tiles {'equal' if np.array_equal(wasm, c) else '**differ from**'} the mesh's bit for bit, "
               f"its numpy tiles {'equal' if np.array_equal(tiled, a @ b) else 'differ from'} `A @ B` "
               f"{'bit for bit' if np.array_equal(tiled, a @ b) else f'by {np.abs(tiled - a @ b).max():.1g} at most'}")  # fmt: skip
    return w


def numpy_mandelbrot(size: int, max_iter: int) -> np.ndarray:
    """Escape counts of the whole image, in the task's arithmetic (the same rounded operations in the
    same order, so the same counts), the points still inside kept in shrinking arrays."""
    axis = np.arange(size, dtype=np.float64)
    cr, ci = np.tile(-2.0 + axis * (3.0 / size), size), np.repeat(-1.5 + axis * (3.0 / size), size)
    counts = np.full(size * size, max_iter, dtype=np.uint32)
    index = np.arange(size * size)
    zr, zi = np.zeros(size * size), np.zeros(size * size)
    for n in range(max_iter):
        rr, ii = zr * zr, zi * zi
        escaped = rr + ii > 4.0
        if escaped.any():
            counts[index[escaped]] = n
            keep = ~escaped
            index, zr, zi, cr, ci, rr, ii = (v[keep] for v in (index, zr, zi, cr, ci, rr, ii))
        zi = (2.0 * zr) * zi + ci
        zr = (rr - ii) + cr
    return counts.reshape(size, size)


def mandelbrot(s: Sitting) -> Workload:
    from make_mandelbrot_tiles import tiles
    from render_mandelbrot import paint, png

    size, side, max_iter = 2048, 128, 256
    w = Workload("mandelbrot", f"{size}x{size}, {(size // side) ** 2} tiles, max_iter {max_iter}")
    w.run = example("mandelbrot.py", ["-o", "mandelbrot.png", "--size", str(size), "--tiles", "256"], s.data_dir, s.work)
    work = tiles(size, side, max_iter)
    jsonl = s.work / "mandelbrot_tiles.jsonl"
    jsonl.write_text("".join(json.dumps(t, separators=(",", ":")) + "\n" for t in work))
    w.alternatives.append(Alternative("`python -m meshnode exec --slots 2` (a command, no mesh)",
                                      meshnode_exec("mandelbrot.wasm", jsonl, s.work / "exec.jsonl", s.exec_dir, s.work),
                                      "command"))  # fmt: skip
    with pool(_open_sandbox, ("mandelbrot.wasm",)) as workers:
        inputs = [json.dumps(t).encode() for t in work]
        seconds, outputs = timed(lambda: workers.map(_run_wasm, inputs, chunksize=1))
    w.alternatives.append(Alternative("the same wasm in `Pool(2)` via `Sandbox` (no mesh)", seconds, "job"))
    seconds, counts = timed(lambda: numpy_mandelbrot(size, max_iter))
    w.alternatives.append(Alternative("numpy, vectorised, 1 process", seconds, "job"))

    executed = exec_outputs(s.work / "exec.jsonl")
    pixels = bytearray(size * size)
    painting, _ = timed(lambda: [paint(pixels, size, t, out) for t, out in zip(work, executed, strict=True)])
    same_png = png(size, size, pixels) == (s.work / "mandelbrot.png").read_bytes()
    grid = np.zeros((size, size), dtype=np.uint32)
    for t, out in zip(work, executed, strict=True):
        grid[t["y0"] : t["y0"] + t["h"], t["x0"] : t["x0"] + t["w"]] = np.frombuffer(out, "<u4").reshape(t["h"], t["w"])
    w.check = (f"the example's PNG {'is' if same_png else '**is not**'} the one painted from exec's counts; numpy's "
               f"counts {'equal' if np.array_equal(counts, grid) else '**differ from**'} exec's, and the Pool's "
               f"{'equal' if outputs == executed else '**differ from**'} them; painting the 4,194,304 pixels "
               f"in Python (the example does it as tiles arrive) takes {painting:.2f} s")  # fmt: skip
    return w


def predict_structure(s: Sitting, seed: int) -> Workload:
    rng = random.Random(seed)
    sequences = ["".join(rng.choices(AMINO_ACIDS, k=rng.randint(50, 500))) for _ in range(5000)]
    fasta = s.work / "proteins.fasta"
    with fasta.open("w") as f:
        for i, seq in enumerate(sequences):
            f.write(f">random{i:05d} generated from seed {seed}\n")
            f.writelines(seq[j : j + 60] + "\n" for j in range(0, len(seq), 60))
    residues = sum(map(len, sequences))
    w = Workload("predict_structure", f"{len(sequences):,} sequences, {residues:,} residues")
    w.run = example("predict_structure.py", [str(fasta), "-o", "predictions.jsonl"], s.data_dir, s.work)
    jsonl = s.work / "sequences.jsonl"
    jsonl.write_text("".join(json.dumps(seq) + "\n" for seq in sequences))
    w.alternatives.append(Alternative("`python -m meshnode exec --slots 2` (a command, no mesh)",
                                      meshnode_exec("secondary_structure.wasm", jsonl, s.work / "exec.jsonl",
                                                    s.exec_dir, s.work), "command"))  # fmt: skip
    mine = [json.loads(line)["prediction"] for line in (s.work / "predictions.jsonl").read_text().splitlines()]
    theirs = [out["prediction"] for out in exec_outputs(s.work / "exec.jsonl")]
    w.check = f"the example's {len(mine):,} predictions {'equal' if mine == theirs else '**differ from**'} exec's"
    return w


def _sha256_matches(job: tuple[int, list[str]]) -> list[tuple[int, str]]:
    offset, words = job
    found = []
    for i, word in enumerate(words):
        digest = hashlib.sha256(word.encode()).hexdigest()
        if digest in _targets:
            found.append((offset + i, _targets[digest]))
    return found


def _pbkdf2_matches(job: tuple[int, list[str]]) -> list[tuple[int, str]]:
    offset, words = job
    found = []
    for i, word in enumerate(words):
        for label, salt, key in _targets:
            if hashlib.pbkdf2_hmac("sha256", word.encode(), salt.encode(), PBKDF2_ITERATIONS) == key:
                found.append((offset + i, label))
    return found


def read_chunks(path: Path, size: int) -> list[tuple[int, list[str]]]:
    words = path.read_text().splitlines()
    return [(i, words[i : i + size]) for i in range(0, len(words), size)]


def cracked(stdout: str) -> dict[str, str]:
    """Label -> password, from the example's report."""
    return {m[1]: json.loads(m[2]) for m in re.finditer(r'^\s+line \d+\s+(\S+)\s+(".*")$', stdout, re.M)}


def audit_passwords(s: Sitting, seed: int) -> list[Workload]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(PASSWORD_LETTERS, k=rng.randint(6, 12))) for _ in range(1_000_000)]
    (s.work / "words.txt").write_text("\n".join(words) + "\n")
    (s.work / "first_words.txt").write_text("\n".join(words[:PBKDF2_CANDIDATES]) + "\n")
    placed = {f"in{i}": words[at] for i, at in enumerate([12, 250_000, 500_000, 999_999])}
    sha = {**placed, **{f"out{i}": f"not in the list {i}" for i in range(6)}}
    (s.work / "sha256.txt").write_text("".join(f"{k}:{hashlib.sha256(v.encode()).hexdigest()}\n" for k, v in sha.items()))
    pbkdf2 = {"p_in": (words[4321], "NaCl-0"), "p_out": ("not in the list", "NaCl-1")}
    keys = {k: hashlib.pbkdf2_hmac("sha256", pw.encode(), salt.encode(), PBKDF2_ITERATIONS) for k, (pw, salt) in pbkdf2.items()}
    (s.work / "pbkdf2.txt").write_text("".join(
        f"{k}:pbkdf2_sha256${PBKDF2_ITERATIONS}${salt}${base64.b64encode(keys[k]).decode()}\n" for k, (_, salt) in pbkdf2.items()
    ))  # fmt: skip

    first = Workload("audit_passwords, SHA-256", "1,000,000 candidates x 10 targets (4 in the list)")
    first.run = example("audit_passwords.py", ["words.txt", "sha256.txt"], s.data_dir, s.work)
    digests = {hashlib.sha256(v.encode()).hexdigest(): k for k, v in sha.items()}
    with pool(_set_targets, (digests,)) as workers:
        # as the example: the file read and cut into chunks of 100,000 while the clock runs
        seconds, found = timed(lambda: workers.map(_sha256_matches, read_chunks(s.work / "words.txt", 100_000), chunksize=1))
    first.alternatives.append(Alternative("hashlib in `Pool(2)`, chunks of 100,000", seconds, "job"))
    expected = {label: words[i] for part in found for i, label in part}
    first.check = agreement(cracked(first.run.stdout), expected, placed)

    second = Workload("audit_passwords, PBKDF2", f"first {PBKDF2_CANDIDATES:,} candidates x 2 targets, "
                      f"{PBKDF2_ITERATIONS:,} iterations (1 in the list)")  # fmt: skip
    second.run = example("audit_passwords.py", ["first_words.txt", "pbkdf2.txt"], s.data_dir, s.work)
    targets = [(k, salt, keys[k]) for k, (_, salt) in pbkdf2.items()]
    with pool(_set_targets, (targets,)) as workers:
        seconds, found = timed(lambda: workers.map(_pbkdf2_matches, read_chunks(s.work / "first_words.txt", 250), chunksize=1))
    second.alternatives.append(Alternative("hashlib `pbkdf2_hmac` in `Pool(2)`, chunks of 250", seconds, "job"))
    second.check = agreement(cracked(second.run.stdout), {label: words[i] for part in found for i, label in part},
                             {"p_in": pbkdf2["p_in"][0]})  # fmt: skip
    return [first, second]


def agreement(mine: dict[str, str], hashlib_found: dict[str, str], placed: dict[str, str]) -> str:
    same = mine == hashlib_found == placed
    return (f"the example cracked {len(mine)} of the targets, {'as' if same else '**not as**'} hashlib did, "
            f"and {'exactly' if same else '**not**'} the ones placed in the list")  # fmt: skip


def federated_averaging(s: Sitting) -> Workload:
    import federated_averaging as ex  # examples/federated_averaging.py

    w = Workload("federated_averaging", "defaults: 8 clients x 400 rows, 10 rounds x 5 local steps")
    w.run = example("federated_averaging.py", [], s.data_dir, s.work)
    shards, test = ex.generate(**ex.DEFAULTS)
    lr, rounds, steps = 0.5, 10, 5  # the example's defaults

    def fedavg_in_numpy() -> np.ndarray:
        weights = np.zeros(test.x.shape[1] + 1)
        for _ in range(rounds):
            local = []
            for data in shards:
                v = weights
                for _ in range(steps):  # the task's step: w -= lr * the mean gradient of the log-loss
                    err = 1.0 / (1.0 + np.exp(-(data.x @ v[:-1] + v[-1]))) - data.y
                    v = v - lr * np.append(data.x.T @ err, err.sum()) / data.rows
                local.append(v)
            weights = ex.fedavg(local, [data.rows for data in shards])
        return weights

    seconds, weights = timed(fedavg_in_numpy)
    w.alternatives.append(Alternative("the same FedAvg in numpy, in this process", seconds, "job"))
    accuracy, log_loss = ex.evaluate(weights, test)
    printed = re.search(r"FedAvg after \d+ rounds: accuracy ([\d.]+), log-loss ([\d.]+)", w.run.stdout)
    assert printed is not None
    same = printed[1] == f"{accuracy:.3f}" and printed[2] == f"{log_loss:.4f}"
    w.check = (f"{w.run.subtasks // 8} jobs one after another: {w.run.seconds / 50 * 1000:.0f} ms a job; the example's "
               f"accuracy {printed[1]} and log-loss {printed[2]} {'are' if same else '**are not**'} numpy's "
               f"({accuracy:.3f}, {log_loss:.4f})")  # fmt: skip
    return w


def warm_up(s: Sitting) -> None:
    """A tiny run of each example and of ``exec``: the node and exec compile each module once, as a
    machine that has run them before has them compiled (inputs the measured runs do not have)."""
    tiny = s.work / "tiny"
    tiny.mkdir()
    (tiny / "p.fasta").write_text(">a\nMKVLAAGIVGLLLAAHEEKKW\n")
    (tiny / "w.txt").write_text("alpha\nbeta\n")
    key = base64.b64encode(hashlib.pbkdf2_hmac("sha256", b"beta", b"s", 2)).decode()
    (tiny / "t.txt").write_text(f"{hashlib.sha256(b'alpha').hexdigest()}\npbkdf2_sha256$2$s${key}\n")
    for name, args in [
        ("matmul.py", ["--random", "8", "8", "8", "-o", "C.npy"]),
        ("mandelbrot.py", ["-o", "m.png", "--size", "64", "--tiles", "4"]),
        ("predict_structure.py", ["p.fasta", "-o", "p.jsonl"]),
        ("audit_passwords.py", ["w.txt", "t.txt"]),
        ("federated_averaging.py", ["--clients", "2", "--rounds", "1", "--local-steps", "1", "--samples", "20"]),
    ]:
        example(name, args, s.data_dir, tiny)
    (tiny / "m.jsonl").write_text(json.dumps({"x0": 0, "y0": 0, "w": 8, "h": 8, "width": 8, "height": 8, "max_iter": 9}) + "\n")
    (tiny / "s.jsonl").write_text('"MKVLAAGIV"\n')
    meshnode_exec("mandelbrot.wasm", tiny / "m.jsonl", tiny / "out.jsonl", s.exec_dir, tiny)
    meshnode_exec("secondary_structure.wasm", tiny / "s.jsonl", tiny / "out.jsonl", s.exec_dir, tiny)


def main(args: argparse.Namespace) -> None:
    load_at_start = os.getloadavg()[0]
    workloads: list[Workload] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        s = Sitting(Path(tmp) / "node", Path(tmp) / "exec", Path(tmp) / "work")
        s.work.mkdir()
        _, log = stack.enter_context(node_process(s.data_dir))
        if args.two_nodes:
            other, other_log = stack.enter_context(node_process(Path(tmp) / "other", "--bootstrap", dial_addr(log)))
            with Client(s.data_dir) as client:
                until(lambda: any(p["state"] == "alive" for p in client.peers()), "the nodes hear each other", other, other_log)
        warm_up(s)
        steps: list[tuple[str, Callable[[], Workload | list[Workload]]]] = [
            ("matmul", lambda: matmul(s)),
            ("mandelbrot", lambda: mandelbrot(s)),
            ("predict_structure", lambda: predict_structure(s, args.seed)),
            ("audit_passwords", lambda: audit_passwords(s, args.seed)),
            ("federated_averaging", lambda: federated_averaging(s)),
        ]
        for name, step in steps:
            print(f"{name} ...", file=sys.stderr, flush=True)
            try:
                done = step()
            except ExampleFailed as exc:
                # the failure is a finding: report it in the table and go on with the others
                done = Workload(name, "", failure=str(exc))
            workloads += done if isinstance(done, list) else [done]
    report(workloads, (load_at_start, os.getloadavg()[0]), args.two_nodes)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--two-nodes", action="store_true", help="a second node process, so the examples use replicas 2")
    p.add_argument("--seed", type=int, default=1, help="of the generated sequences and passwords (default: 1)")
    main(p.parse_args())
