"""examples/matmul.py and its task, tasks_wasm/matmul_tile.wasm: the product equals numpy's, and the
task's arithmetic is exactly the documented order of summation."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from meshnode.core.manifest import TaskLimits
from meshnode.sandbox.runtime import Sandbox
from tests.cli.nodes import NodeProcess

from ..waiting import STEP
from .conftest import EXAMPLES, run_example

TASK = EXAMPLES.parent / "tasks_wasm" / "matmul_tile.wasm"
LIMITS = TaskLimits(fuel=1 << 40, memory=256 << 20, timeout_ms=60_000, max_output=64 << 20)


def reference_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C in plain Python floats, each element summed in the order p = 0..k-1 as the task documents."""
    rows, cols = a.tolist(), b.T.tolist()
    return np.array([[_dot(row, col) for col in cols] for row in rows])


def _dot(row: list[float], col: list[float]) -> float:
    acc = 0.0
    for x, y in zip(row, col, strict=True):
        acc = acc + x * y
    return acc


def relative_to_terms(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """The largest |C - A @ B| relative to |A| @ |B| (the scale at which summation order matters)."""
    return float((np.abs(c - a @ b) / (np.abs(a) @ np.abs(b))).max())


def test_product_of_npy_files_equals_numpy_and_the_documented_sums(node: NodeProcess, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(96, 80)), rng.normal(size=(80, 64)).astype(np.float32)
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    # 28 divides neither 96 nor 64: tiles of 28 and 12 rows, 28 and 8 columns.
    ran = run_example("matmul.py", "A.npy", "B.npy", "-o", "C.npy", "--tile", "28", "--check", node=node, cwd=tmp_path)
    c = np.load(tmp_path / "C.npy")
    assert c.shape == (96, 64) and c.dtype == np.float64
    assert relative_to_terms(a, b.astype(np.float64), c) <= 1e-12
    assert np.array_equal(c, reference_product(a, b.astype(np.float64)))  # float32 B arrived exactly, as float64
    assert "12 subtasks" in ran.stdout and "on 1 peer" in ran.stdout, ran.stdout
    assert "relative to |A| @ |B|" in ran.stdout, ran.stdout


def test_random_demo_writes_its_matrices_beside_the_product(node: NodeProcess, tmp_path: Path) -> None:
    run_example("matmul.py", "--random", "30", "20", "10", "--seed", "5", "-o", "C.npy", node=node, cwd=tmp_path)
    a, b, c = (np.load(tmp_path / name) for name in ("A.npy", "B.npy", "C.npy"))
    assert a.shape == (30, 20) and b.shape == (20, 10)
    assert np.array_equal(c, reference_product(a, b))


def test_shape_mismatch_is_one_line_and_exits_non_zero(node: NodeProcess, tmp_path: Path) -> None:
    np.save(tmp_path / "A.npy", np.ones((4, 3)))
    np.save(tmp_path / "B.npy", np.ones((5, 2)))
    ran = subprocess.run(
        [sys.executable, str(EXAMPLES / "matmul.py"), "A.npy", "B.npy", "-o", "C.npy", "--data-dir", str(node.data_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=STEP,
    )  # fmt: skip
    assert ran.returncode != 0
    assert ran.stderr.strip().splitlines() == ["matmul.py: A is 4x3 but B is 5x2: A's columns must equal B's rows"]
    assert not (tmp_path / "C.npy").exists()


# --- the task alone, in the sandbox as the mesh runs it --------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(slots=1) as box:
        yield box


def tile_input(a: np.ndarray, b: np.ndarray, magic: bytes = b"MMT1") -> bytes:
    (rows, k), cols = a.shape, b.shape[1]
    return magic + struct.pack("<III", rows, k, cols) + a.astype("<f8").tobytes() + b.astype("<f8").tobytes()


def test_task_tile_is_the_python_sum_bit_for_bit(sandbox: Sandbox) -> None:
    rng = np.random.default_rng(7)
    # Magnitudes far apart, so that another order of summation, or a fused multiply-add, would round differently.
    a = rng.normal(size=(5, 9)) * 10.0 ** rng.integers(-12, 12, size=(5, 9))
    b = rng.normal(size=(9, 3)) * 10.0 ** rng.integers(-12, 12, size=(9, 3))
    a[0, 0], b[1, 1] = 5e-324, -0.0  # a subnormal and a negative zero travel exactly too
    outcome = sandbox.run_sync(TASK.read_bytes(), tile_input(a, b), LIMITS)
    assert outcome.error is None, outcome.error
    expected = [_dot(row, col) for row in a.tolist() for col in b.T.tolist()]
    assert outcome.output == struct.pack(f"<{len(expected)}d", *expected)
    backwards = [_dot(row[::-1], col[::-1]) for row in a.tolist() for col in b.T.tolist()]
    assert backwards != expected  # so the data do tell one order of summation from another


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tile_input(np.ones((2, 2)), np.ones((2, 2)), magic=b"MMT2"), "magic"),
        (b"MMT1" + struct.pack("<III", 2, 0, 2), "at least 1"),
        (tile_input(np.ones((2, 2)), np.ones((2, 2)))[:-8], "input length"),
        (b"MMT1" + struct.pack("<III", 4096, 4096, 1), "too large"),
    ],
)
def test_task_fails_bad_input_with_its_message(sandbox: Sandbox, data: bytes, message: str) -> None:
    outcome = sandbox.run_sync(TASK.read_bytes(), data, LIMITS)
    assert outcome.output is None and outcome.error is not None
    assert outcome.error.code == "task_error" and message in outcome.error.message, outcome.error
