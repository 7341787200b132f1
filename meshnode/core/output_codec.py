"""Outputs as they are kept and moved: zlib-compressed when that pays, checked on the way back in.

Task outputs are often very compressible (images, counts, sparse arrays: a
mandelbrot tile of 256 KiB is 1 to 31 KiB after zlib level 1), and compressing
them (680 MB/s) is faster than anything else done with them: committing them to
SQLite (360 MB/s), or moving them through libp2p's Noise and Yamux. So an output
is packed once, by the node that ran it, and stays packed: in its result cache
and outbox, on the wire, and in the owner's journal; it is inflated only for
whoever reads it. As Dask does, a sample decides: compressing data that does not
shrink would cost time for nothing. A claim always hashes the plain bytes, so
packing changes nothing anyone verifies.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from ..errors import WireError
from .job_messages import MAX_OUTPUT_BYTES, PushedResult

__all__ = ["Packed", "pack", "plain_output", "pushed_result", "unpack"]

MIN_SIZE: Final = 4096  # smaller outputs are not worth a try
SAMPLE: Final = 8192
WORTH_IT: Final = 0.75  # compress when the sample shrinks below this share of its size


@dataclass(frozen=True, slots=True)
class Packed:
    """An output as it is kept and sent: ``data`` is zlib-compressed when ``zlib`` is set."""

    data: bytes
    zlib: bool


def pack(output: bytes) -> Packed:
    """The output, compressed if that pays."""
    if len(output) >= MIN_SIZE:
        sample = output[:SAMPLE]
        if len(zlib.compress(sample, 1)) < WORTH_IT * len(sample):
            packed = zlib.compress(output, 1)
            if len(packed) < len(output):
                return Packed(packed, True)
    return Packed(output, False)


def unpack(data: bytes, compressed: bool, limit: int = MAX_OUTPUT_BYTES) -> bytes:
    """The plain output of a packed one.

    Raises:
        WireError: not valid zlib data, or it inflates beyond ``limit`` bytes (a zip bomb).
    """
    if not compressed:
        return data
    inflate = zlib.decompressobj()
    try:
        plain = inflate.decompress(data, limit + 1)
    except zlib.error as exc:
        raise WireError(f"a compressed output is not valid zlib data: {exc}") from None
    if len(plain) > limit or inflate.unconsumed_tail or not inflate.eof:
        raise WireError(f"a compressed output inflates beyond {limit} bytes, or is truncated")
    return plain


def pushed_result(claim: bytes, output: Packed | None) -> PushedResult:
    """A signed claim and its packed output, as pushed to the owner."""
    if output is None:
        return PushedResult(claim=claim, output=None, zlib=False)
    return PushedResult(claim=claim, output=output.data, zlib=output.zlib)


def plain_output(pushed: PushedResult, limit: int = MAX_OUTPUT_BYTES) -> bytes | None:
    """The output as the executor computed it.

    Raises:
        WireError: not valid zlib data, or it inflates beyond ``limit`` bytes (a zip bomb).
    """
    return None if pushed.output is None else unpack(pushed.output, pushed.zlib, limit)
