"""examples/mandelbrot.py: the same image as the three-step route (make tiles, exec, render), and
its refusals of parameters that do not cut into square tiles."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.cli.nodes import NodeProcess

from ..waiting import JOB, STEP
from .conftest import EXAMPLES, run_example

TASK = EXAMPLES.parent / "tasks_wasm" / "mandelbrot.wasm"


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the greyscale pixels of an 8-bit greyscale PNG whose rows are unfiltered."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 0) and b"IEND" in chunks
    rows = zlib.decompress(chunks[b"IDAT"])
    assert len(rows) == height * (width + 1)
    assert all(rows[y * (width + 1)] == 0 for y in range(height))  # filter type None
    return width, height, b"".join(rows[y * (width + 1) + 1 : (y + 1) * (width + 1)] for y in range(height))


def three_step_render(tmp_path: Path, size: int, tile: int, max_iter: int) -> bytes:
    """The README's route: make_mandelbrot_tiles.py, `meshnode exec`, render_mandelbrot.py; the PNG's bytes."""
    tiles, results, image = tmp_path / "tiles.jsonl", tmp_path / "results.jsonl", tmp_path / "three-step.png"

    def run(*command: str) -> str:
        ran = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=JOB)
        assert ran.returncode == 0, ran.stderr
        return ran.stdout

    tiles.write_text(run(str(EXAMPLES / "make_mandelbrot_tiles.py"), "--size", str(size), "--tile", str(tile),
                         "--max-iter", str(max_iter)))  # fmt: skip
    run("-m", "meshnode", "exec", str(TASK), "--input-jsonl", str(tiles), "--output", str(results),
        "--slots", "1", "--data-dir", str(tmp_path / "exec-node"))  # fmt: skip
    run(str(EXAMPLES / "render_mandelbrot.py"), str(tiles), str(results), str(image))
    return image.read_bytes()


def test_image_equals_the_three_step_route(node: NodeProcess, tmp_path: Path) -> None:
    ran = run_example("mandelbrot.py", "-o", "m.png", "--size", "128", "--tiles", "16", "--max-iter", "64",
                      node=node, cwd=tmp_path)  # fmt: skip
    image = (tmp_path / "m.png").read_bytes()
    width, height, pixels = decode_png(image)
    assert (width, height) == (128, 128)
    three_step = three_step_render(tmp_path, 128, 32, 64)
    assert pixels == decode_png(three_step)[2]
    assert image == three_step  # the same PNG encoder, so the same file
    # Not a blank picture: the point -0.5 + 0i (pixel 64, 64) never escapes, the corner -2 - 1.5i at once.
    assert pixels[64 * 128 + 64] == 0 and pixels[0] > 200
    assert "16 subtasks of 32x32 pixels on 1 peer" in ran.stdout, ran.stdout


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--tiles", "12"], "mandelbrot.py: --tiles 12: the tiles make a square grid, so give a square number (4, 16, 64, ...)"),
        (["--size", "130", "--tiles", "16"], "mandelbrot.py: --size 130 is not divisible by 4, the tiles per side of --tiles 16"),
    ],
)  # fmt: skip
def test_parameters_that_do_not_tile_are_refused_in_one_line(node: NodeProcess, tmp_path: Path, args: list[str],
                                                              error: str) -> None:  # fmt: skip
    command = [sys.executable, str(EXAMPLES / "mandelbrot.py"), "-o", "m.png", *args, "--data-dir", str(node.data_dir)]
    ran = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=STEP)
    assert ran.returncode != 0
    assert ran.stderr.strip().splitlines() == [error]
    assert not (tmp_path / "m.png").exists()
