"""Write the tile descriptions of a Mandelbrot image, one JSON line per tile.

    python examples/make_mandelbrot_tiles.py --size 4096 --tile 256 --max-iter 500 > tiles.jsonl
"""

from __future__ import annotations

import argparse
import json


def tiles(size: int, tile: int, max_iter: int) -> list[dict[str, int]]:
    return [
        {"x0": x0, "y0": y0, "w": min(tile, size - x0), "h": min(tile, size - y0),
         "width": size, "height": size, "max_iter": max_iter}
        for y0 in range(0, size, tile)
        for x0 in range(0, size, tile)
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="image width and height in pixels")
    p.add_argument("--tile", type=int, default=128, help="tile side in pixels")
    p.add_argument("--max-iter", type=int, default=256)
    args = p.parse_args()
    for t in tiles(args.size, args.tile, args.max_iter):
        print(json.dumps(t, separators=(",", ":")))


if __name__ == "__main__":
    main()
