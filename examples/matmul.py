"""Multiply two matrices on the mesh: C = A x B, one subtask per tile of C.

    python examples/matmul.py A.npy B.npy -o C.npy [--tile N] [--check]
    python examples/matmul.py --random 1000 800 1200 --seed 1 -o C.npy --check

A and B are 2-D float arrays saved with numpy (.npy). Each subtask runs
tasks_wasm/matmul_tile.wasm on one tile of C: it receives the tile's rows of A and
columns of B as exact little-endian doubles and sums every element in the order
p = 0..k-1, so every peer returns the same bits. The tiles are assembled into C,
written as C.npy. --check also computes A @ B with numpy and prints the largest
difference, relative to |A| @ |B| (the scale at which summation order can change an
element); it exits 1 when that is over 1e-9. --random M K N draws A (M x K) and
B (K x N) uniformly from [-1, 1) with --seed and writes them beside C.npy as A.npy
and B.npy.

By default a tile is square, small enough that its input (its rows of A and columns of
B) stays within 4 MiB, and there are at least 4 tiles per slot of the mesh. Matrices holding
inf or NaN, or large enough to overflow, run with canonical NaNs, so that peers of any
architecture return the same bits.

Uses numpy (installed in meshnode's venv).
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, NoReturn

import numpy as np
from mesh_args import add_mesh_flags, connect

from meshnode import Client, MeshError

TASK = Path(__file__).resolve().parents[1] / "tasks_wasm" / "matmul_tile.wasm"
MAGIC = b"MMT1"
MAX_ELEMS = 4_194_304  # the task's limit on rows*k, k*cols and rows*cols
TILE_INPUT_BYTES = 4 << 20  # what one subtask should receive at most, when the tile is ours to choose
TILES_PER_SLOT = 4  # enough tiles that no slot idles while a slow one finishes the last
JOB_INPUT_BYTES = 512 << 20  # the node takes up to 1 GiB of inputs per job; more tiles go in further jobs
CHECK_TOLERANCE = 1e-9
FLOAT_TYPES = (np.float16, np.float32, np.float64)  # every one converts to float64 exactly


class Tile(NamedTuple):
    """The rows row0..row0+rows-1 and columns col0..col0+cols-1 of C."""

    row0: int
    col0: int
    rows: int
    cols: int


def fail(message: str) -> NoReturn:
    raise SystemExit(f"matmul.py: {message}")


def load_matrix(path: Path) -> np.ndarray:
    """A 2-D float array from a .npy file, as float64."""
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    except (ValueError, EOFError):  # numpy's word for a file that is not .npy, or holds Python objects
        fail(f"{path}: not a .npy file of numbers")
    if array.ndim != 2:
        fail(f"{path}: a 2-D array is needed, not one of shape {array.shape}")
    if array.dtype.type not in FLOAT_TYPES:
        fail(f"{path}: holds {array.dtype} values; a float16, float32 or float64 array is needed")
    return array.astype(np.float64)


def check_shapes(a: np.ndarray, b: np.ndarray) -> None:
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        fail(f"A is {m}x{k} but B is {k2}x{n}: A's columns must equal B's rows")
    if 0 in (m, k, n):
        fail(f"A is {m}x{k} and B is {k2}x{n}: an empty matrix has nothing to multiply")
    if k > MAX_ELEMS:
        fail(f"A's {k} columns are over {MAX_ELEMS}, the most one subtask can take")


def random_matrices(m: int, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (m, k)), rng.uniform(-1.0, 1.0, (k, n))


def default_tile(m: int, k: int, n: int, slots: int) -> int:
    """The largest square tile whose input fits TILE_INPUT_BYTES and that gives TILES_PER_SLOT tiles per slot."""
    largest = max(1, TILE_INPUT_BYTES // (16 * k))  # a t x t tile receives t rows of A and t columns of B
    for side in range(min(largest, max(m, n)), 0, -1):
        if math.ceil(m / side) * math.ceil(n / side) >= TILES_PER_SLOT * slots:
            return side
    return 1


def check_tile(side: int, m: int, k: int, n: int) -> None:
    rows, cols = min(side, m), min(side, n)
    if side < 1:
        fail(f"--tile {side}: a tile needs at least one row and column")
    if max(rows * k, k * cols, rows * cols) > MAX_ELEMS:
        fail(f"--tile {side}: too large for one subtask (rows*k, k*cols and rows*cols must each be at most {MAX_ELEMS})")


def tiles_of(m: int, n: int, side: int) -> list[Tile]:
    return [
        Tile(row0, col0, min(side, m - row0), min(side, n - col0))
        for row0 in range(0, m, side)
        for col0 in range(0, n, side)
    ]


def tile_input(a: np.ndarray, b: np.ndarray, tile: Tile) -> bytes:
    """The task's input for one tile: magic, u32 rows, k, cols, then A's rows and B's columns as <f8."""
    rows = a[tile.row0 : tile.row0 + tile.rows]
    cols = b[:, tile.col0 : tile.col0 + tile.cols]
    header = MAGIC + struct.pack("<III", tile.rows, a.shape[1], tile.cols)
    return header + rows.astype("<f8").tobytes() + cols.astype("<f8").tobytes()


def job_batches(tiles: list[Tile], k: int) -> list[list[Tile]]:
    """The tiles in runs whose inputs add up to at most JOB_INPUT_BYTES (one job each)."""
    batches: list[list[Tile]] = [[]]
    size = 0
    for tile in tiles:
        need = 16 + 8 * k * (tile.rows + tile.cols)
        if batches[-1] and size + need > JOB_INPUT_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(tile)
        size += need
    return batches


def may_make_nans(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the products or sums can meet inf or NaN, whose NaN bits differ between machines.

    No partial sum exceeds k * max|A| * max|B|; below overflow, no NaN can arise.
    """
    bound = float(np.abs(a).max()) * float(np.abs(b).max()) * a.shape[1]
    return not bound < sys.float_info.max / 2


def mesh_slots(client: Client) -> int:
    """Slots of this node and of the peers it hears."""
    peers = [p for p in client.peers() if p["state"] == "alive"]
    return int(client.node().get("slots") or 1) + sum(int(p.get("slots") or 1) for p in peers)


def multiply(
    client: Client, a: np.ndarray, b: np.ndarray, side: int, policy: dict[str, object]
) -> tuple[np.ndarray, int, set[str], int]:
    """C = A x B on the mesh; also the subtasks, the distinct executors and the jobs it took."""
    m, k = a.shape
    n = b.shape[1]
    c = np.empty((m, n))
    tiles = tiles_of(m, n, side)
    canonical = may_make_nans(a, b)
    jobs = []
    for batch in job_batches(tiles, k):
        inputs = (tile_input(a, b, tile) for tile in batch)
        job = client.submit(TASK, inputs, nan_canonical=canonical, label=f"matmul {m}x{k}x{n}", **policy)
        jobs.append((job, batch))
    executors: set[str] = set()
    for job, batch in jobs:
        for result in job.results():
            tile = batch[result.index]
            if not result.ok:
                for other, _ in jobs:
                    other.cancel()
                assert result.error is not None
                fail(f"the tile at row {tile.row0}, column {tile.col0} failed: {result.error.code}: {result.error.message}")
            if not isinstance(result.output, bytes) or len(result.output) != 8 * tile.rows * tile.cols:
                fail(f"the tile at row {tile.row0}, column {tile.col0} came back malformed")
            block = np.frombuffer(result.output, dtype="<f8").reshape(tile.rows, tile.cols)
            c[tile.row0 : tile.row0 + tile.rows, tile.col0 : tile.col0 + tile.cols] = block
            executors.update(result.executors)
    return c, len(tiles), executors, len(jobs)


def relative_difference(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """The largest |C - A @ B|, each relative to (|A| @ |B|), the sum of its terms' magnitudes.

    Any order of summation changes an element by at most about k * eps times that sum, while an
    element's own size can be far smaller (terms that cancel), so this is the fair yardstick.
    """
    expected = a @ b
    with np.errstate(invalid="ignore", divide="ignore"):
        difference = np.abs(c - expected) / (np.abs(a) @ np.abs(b))
    same = (c == expected) | (np.isnan(c) & np.isnan(expected))
    difference[same] = 0.0
    return float(np.nan_to_num(difference, nan=np.inf).max())


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", nargs="?", type=Path, metavar="A.npy", help="the left matrix (m x k)")
    p.add_argument("b", nargs="?", type=Path, metavar="B.npy", help="the right matrix (k x n)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="C.npy", help="where to write the product")
    p.add_argument("--tile", type=int, help="tile side in elements of C (default: chosen from the sizes and the mesh)")
    p.add_argument("--check", action="store_true", help="compare with numpy's A @ B; exit 1 if over 1e-9 apart")
    p.add_argument("--random", type=int, nargs=3, metavar=("M", "K", "N"), help="multiply random matrices of these sizes")
    p.add_argument("--seed", type=int, default=0, help="the seed of --random (default: 0)")
    add_mesh_flags(p)
    args = p.parse_args()
    if args.random is not None and args.a is not None:
        fail("give A.npy and B.npy, or --random M K N, not both")
    if args.random is None and args.b is None:
        fail("give A.npy and B.npy, or --random M K N")
    if args.random is not None and min(args.random) < 1:
        fail(f"--random {' '.join(map(str, args.random))}: each size must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.random is not None:
        a, b = random_matrices(*args.random, seed=args.seed)
        for name, matrix in (("A.npy", a), ("B.npy", b)):
            np.save(args.output.parent / name, matrix)
    else:
        a, b = load_matrix(args.a), load_matrix(args.b)
    check_shapes(a, b)
    (m, k), n = a.shape, b.shape[1]
    try:
        client, policy = connect(args)
        with client:
            side = args.tile if args.tile is not None else default_tile(m, k, n, mesh_slots(client))
            check_tile(side, m, k, n)
            start = time.monotonic()
            c, subtasks, executors, jobs = multiply(client, a, b, side, policy)
            elapsed = time.monotonic() - start
    except MeshError as exc:
        fail(str(exc))
    np.save(args.output, c)
    in_jobs = f" in {jobs} jobs" if jobs > 1 else ""
    print(
        f"C = A ({m}x{k}) x B ({k}x{n}): {subtasks} subtasks of tiles up to {side}x{side}{in_jobs}, "
        f"on {len(executors)} peer{'s' if len(executors) != 1 else ''}, in {elapsed:.2f} s; wrote {args.output}"
    )
    if args.check:
        difference = relative_difference(a, b, c)
        print(f"largest difference from numpy's A @ B, relative to |A| @ |B|: {difference:.3g}")
        if not difference <= CHECK_TOLERANCE:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
