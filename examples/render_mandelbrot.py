"""Assemble the results of the mandelbrot task into a greyscale PNG image (standard library only).

    python -m meshnode exec tasks_wasm/mandelbrot.wasm --input-jsonl tiles.jsonl --output results.jsonl
    python examples/render_mandelbrot.py tiles.jsonl results.jsonl mandelbrot.png
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import struct
import zlib


def png(width: int, height: int, grey: bytes) -> bytes:
    """An 8-bit greyscale PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + grey[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def paint(pixels: bytearray, width: int, tile: dict[str, int], output: bytes) -> None:
    """Draw one tile into the image (``width`` pixels wide), from the task's output for it.

    Shades are logarithmic in the escape count, so the slow escapes near the set stay visible:
    light where a point escapes quickly, black where it never does.
    """
    counts = struct.unpack(f"<{tile['w'] * tile['h']}I", output)
    scale = 255 / math.log(tile["max_iter"] + 1)
    for row in range(tile["h"]):
        start = (tile["y0"] + row) * width + tile["x0"]
        line = counts[row * tile["w"] : (row + 1) * tile["w"]]
        pixels[start : start + tile["w"]] = bytes(255 - int(math.log(c + 1) * scale) for c in line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tiles", help="the JSON Lines input given to the task")
    p.add_argument("results", help="the JSON Lines output of exec or submit")
    p.add_argument("image", help="the PNG file to write")
    args = p.parse_args()
    with open(args.tiles, encoding="utf-8") as f:
        tiles = [json.loads(line) for line in f if line.strip()]
    with open(args.results, encoding="utf-8") as f:
        results = [json.loads(line) for line in f if line.strip()]
    width, height = tiles[0]["width"], tiles[0]["height"]
    pixels = bytearray(width * height)
    for result in results:
        if result["status"] != "ok":
            raise SystemExit(f"tile {result['index']} failed: {result['error']['message']}")
        paint(pixels, width, tiles[result["index"]], base64.b64decode(result["output"]["base64"]))
    with open(args.image, "wb") as f:
        f.write(png(width, height, pixels))
    print(f"wrote {args.image}: {width}x{height}, {len(results)} tiles")


if __name__ == "__main__":
    main()
