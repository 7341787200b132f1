"""Render the Mandelbrot set on the mesh: one command from parameters to a PNG.

    python examples/mandelbrot.py -o mandelbrot.png [--size 1024] [--tiles 64] [--max-iter 256]

The image (re -2..1, im -1.5..1.5) is cut into --tiles square tiles, one subtask each of
tasks_wasm/mandelbrot.wasm; the escape counts that come back are shaded and written as a
greyscale PNG. It is make_mandelbrot_tiles.py, `meshnode submit` and render_mandelbrot.py
in one step, with their code. Standard library only.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import NoReturn

from make_mandelbrot_tiles import tiles
from mesh_args import add_mesh_flags, connect
from render_mandelbrot import paint, png

from meshnode import MeshError

TASK = Path(__file__).resolve().parents[1] / "tasks_wasm" / "mandelbrot.wasm"
MAX_TILE_PIXELS = 16_777_216  # the task's limits
MAX_ITER = 1_000_000


def fail(message: str) -> NoReturn:
    raise SystemExit(f"mandelbrot.py: {message}")


def tile_side(size: int, count: int) -> int:
    """The side of each of ``count`` square tiles of a ``size`` x ``size`` image.

    Raises:
        SystemExit: the parameters cannot be cut so, with a one-line reason.
    """
    if size < 1:
        fail(f"--size {size}: the image needs at least one pixel")
    per_side = math.isqrt(count) if count >= 1 else 0
    if count < 1 or per_side * per_side != count:
        fail(f"--tiles {count}: the tiles make a square grid, so give a square number (4, 16, 64, ...)")
    if size % per_side:
        fail(f"--size {size} is not divisible by {per_side}, the tiles per side of --tiles {count}")
    side = size // per_side
    if side * side > MAX_TILE_PIXELS:
        fail(f"tiles of {side}x{side} pixels are over the task's {MAX_TILE_PIXELS} pixels: give more --tiles")
    return side


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="IMAGE.png", help="the PNG file to write")
    p.add_argument("--size", type=int, default=1024, help="image width and height in pixels (default: 1024)")
    p.add_argument("--tiles", type=int, default=64, help="subtasks, a square number whose root divides --size (default: 64)")
    p.add_argument("--max-iter", type=int, default=256, help="iterations before a point counts as inside (default: 256)")
    add_mesh_flags(p)
    args = p.parse_args()
    side = tile_side(args.size, args.tiles)
    if not 1 <= args.max_iter <= MAX_ITER:
        fail(f"--max-iter {args.max_iter}: give 1 to {MAX_ITER}")

    work = tiles(args.size, side, args.max_iter)
    pixels = bytearray(args.size * args.size)
    executors: set[str] = set()
    try:
        client, policy = connect(args)
        with client:
            start = time.monotonic()
            job = client.submit(TASK, work, label=f"mandelbrot {args.size}px", **policy)
            for result in job.results():
                if not result.ok:
                    job.cancel()
                    assert result.error is not None
                    fail(f"tile {result.index} failed: {result.error.code}: {result.error.message}")
                paint(pixels, args.size, work[result.index], result.output)
                executors.update(result.executors)
            elapsed = time.monotonic() - start
    except MeshError as exc:
        fail(str(exc))
    args.output.write_bytes(png(args.size, args.size, pixels))
    peers = f"{len(executors)} peer{'s' if len(executors) != 1 else ''}"
    print(
        f"{args.size}x{args.size} Mandelbrot, max_iter {args.max_iter}: {job.subtasks} subtasks of "
        f"{side}x{side} pixels on {peers} in {elapsed:.2f} s; wrote {args.output}"
    )


if __name__ == "__main__":
    main()
