"""Outputs on the wire: zlib-compressed when that pays, checked on the way back in.

Task outputs are often very compressible (images, counts, sparse arrays: a
mandelbrot tile of 256 KiB is 1 to 31 KiB after zlib level 1) and moving bytes
through libp2p's Noise and Yamux costs CPU on both sides, more than compressing
them. As Dask does, a sample of the output decides: compressing data that does
not shrink would cost time for nothing. The claim always hashes the plain
bytes, so compression changes nothing the owner verifies.
"""

from __future__ import annotations

import zlib
from typing import Final

from ..errors import WireError
from .job_messages import MAX_OUTPUT_BYTES, PushedResult

__all__ = ["pushed_result", "plain_output"]

MIN_SIZE: Final = 4096  # smaller outputs are not worth a try
SAMPLE: Final = 8192
WORTH_IT: Final = 0.75  # compress when the sample shrinks below this share of its size


def pushed_result(claim: bytes, output: bytes | None) -> PushedResult:
    """A signed claim and its output, the output compressed if that pays."""
    if output is not None and len(output) >= MIN_SIZE:
        sample = output[:SAMPLE]
        if len(zlib.compress(sample, 1)) < WORTH_IT * len(sample):
            packed = zlib.compress(output, 1)
            if len(packed) < len(output):
                return PushedResult(claim=claim, output=packed, zlib=True)
    return PushedResult(claim=claim, output=output, zlib=False)


def plain_output(pushed: PushedResult, limit: int = MAX_OUTPUT_BYTES) -> bytes | None:
    """The output as the executor computed it.

    Raises:
        WireError: not valid zlib data, or it inflates beyond ``limit`` bytes (a zip bomb).
    """
    if not pushed.zlib or pushed.output is None:
        return pushed.output
    inflate = zlib.decompressobj()
    try:
        plain = inflate.decompress(pushed.output, limit + 1)
    except zlib.error as exc:
        raise WireError(f"a compressed output is not valid zlib data: {exc}") from None
    if len(plain) > limit or inflate.unconsumed_tail or not inflate.eof:
        raise WireError(f"a compressed output inflates beyond {limit} bytes, or is truncated")
    return plain
