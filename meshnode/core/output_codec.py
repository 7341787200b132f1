"""Outputs as they are kept and moved: zstd-compressed when that pays, checked on the way back in.

Task outputs are often very compressible (images, counts, sparse arrays: a
mandelbrot tile of 256 KiB is 36 bytes to 28 KiB packed), and compressing them is
cheaper than anything else done with them: committing them to SQLite, or moving
them through libp2p's Noise and Yamux. So an output is packed once, by the node
that ran it, and stays packed: in its result cache and outbox, on the wire, and
in the owner's journal; it is unpacked only for whoever reads it. As Dask does, a
sample decides: compressing data that does not shrink would cost time for nothing.
A claim always hashes the plain bytes, so packing changes nothing anyone verifies.

Why zstd level 1 and not the standard library's zlib: on the 64 MiB of a
4096x4096 mandelbrot job's tiles, zlib level 1 took 145-197 ms to compress and
78-96 ms to inflate, to 1.41 MiB; zstd level 1 takes 34-40 ms and 27 ms, to
0.91 MiB. Packing was the largest single cost of both nodes of a 2-node job.
Outputs packed with zlib (``ZLIB``), as earlier versions kept them in journals and
outboxes, are still read.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from typing import Final

import zstandard

from ..errors import WireError
from .job_messages import MAX_OUTPUT_BYTES, PushedResult

__all__ = ["CODECS", "PLAIN", "ZLIB", "ZSTD", "Packed", "pack", "plain_output", "pushed_result", "unpack"]

# How an output is packed, as the wire (PushedResult.codec) and the journal (its ``packed`` columns) say it.
PLAIN: Final = 0
ZLIB: Final = 1  # read only: what earlier versions wrote
ZSTD: Final = 2
CODECS: Final = (PLAIN, ZLIB, ZSTD)

MIN_SIZE: Final = 4096  # smaller outputs are not worth a try
SAMPLE: Final = 8192
WORTH_IT: Final = 0.75  # compress when the sample shrinks below this share of its size
LEVEL: Final = 1


class _Contexts(threading.local):
    """zstd's contexts, one set per thread: they may not be shared by threads at once, and a new one
    costs 15-20 µs, a sixth of compressing a 256 KiB tile."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_contexts = _Contexts()


@dataclass(frozen=True, slots=True)
class Packed:
    """An output as it is kept and sent: ``data`` is packed as ``codec`` says (``PLAIN``: as it is)."""

    data: bytes
    codec: int


def pack(output: bytes) -> Packed:
    """The output, compressed if that pays."""
    if len(output) >= MIN_SIZE:
        compressor = _contexts.compressor
        sample = output[:SAMPLE]
        if len(compressor.compress(sample)) < WORTH_IT * len(sample):
            packed = compressor.compress(output)
            if len(packed) < len(output):
                return Packed(packed, ZSTD)
    return Packed(output, PLAIN)


def unpack(data: bytes, codec: int, limit: int = MAX_OUTPUT_BYTES) -> bytes:
    """The plain output of a packed one.

    Raises:
        WireError: an unknown codec, data that does not decompress, or one that would grow beyond ``limit``
            bytes (a zip bomb).
    """
    if codec == PLAIN:
        return data
    if codec == ZSTD:
        return _unzstd(data, limit)
    if codec == ZLIB:
        return _inflate(data, limit)
    raise WireError(f"unknown output codec {codec}")


def _unzstd(data: bytes, limit: int) -> bytes:
    # The frame must say its size, which zstd then holds it to: a bomb is refused before it grows.
    try:
        size = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as exc:
        raise WireError(f"a compressed output is not valid zstd data: {exc}") from None
    if size == zstandard.CONTENTSIZE_UNKNOWN or size > limit:
        raise WireError(f"a compressed output does not say its size, or says more than {limit} bytes")
    stream = _contexts.decompressor.decompressobj()  # measured faster than decompress() for one frame (2.4 GB/s here)
    try:
        plain = stream.decompress(data)
    except zstandard.ZstdError as exc:
        raise WireError(f"a compressed output is not valid zstd data: {exc}") from None
    if len(plain) != size or not stream.eof or stream.unused_data:
        raise WireError("a compressed output is truncated, or has data after its end")
    return plain


def _inflate(data: bytes, limit: int) -> bytes:
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
        return PushedResult(claim=claim, output=None, codec=PLAIN)
    return PushedResult(claim=claim, output=output.data, codec=output.codec)


def plain_output(pushed: PushedResult, limit: int = MAX_OUTPUT_BYTES) -> bytes | None:
    """The output as the executor computed it.

    Raises:
        WireError: data that does not decompress, or that would grow beyond ``limit`` bytes (a zip bomb).
    """
    return None if pushed.output is None else unpack(pushed.output, pushed.codec, limit)
