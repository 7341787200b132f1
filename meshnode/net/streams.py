"""Length-prefixed frames on libp2p streams (4-byte big-endian length, then the bytes).

``stream.read(n)`` may return fewer than n bytes, so reads loop; every frame has
a cap checked before its body is read, so a peer cannot make us buffer more
than the cap.

A server reads a peer's requests with ``read_request``, which says why a frame
could not be read (``FrameError.reason``): libp2p reports an empty or cut-short
stream as a ``StreamEOF`` with no message at all, which told nobody anything.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import trio

from ..errors import FrameError, WireError

__all__ = ["FRAME_REASONS", "read_frame", "read_request", "write_frame"]

# Why a request frame could not be read:
#   closed     the stream ended where a frame should start (for a first frame: an empty stream)
#   truncated  the stream ended inside a frame
#   oversize   the length prefix is over the cap
#   broken     the stream was reset or its connection failed
FRAME_REASONS: Final = ("closed", "truncated", "oversize", "broken")


async def read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise WireError(f"stream closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def read_frame(stream: Any, max_size: int) -> bytes:
    """One frame. Raises WireError for a frame over ``max_size`` or a stream that ends early."""
    (size,) = struct.unpack(">I", await read_exact(stream, 4))
    if size > max_size:
        raise WireError(f"frame of {size} bytes is over the {max_size}-byte limit")
    return await read_exact(stream, size)


async def read_request(stream: Any, max_size: int) -> bytes:
    """One frame from a peer's request stream.

    Args:
        stream: a libp2p stream (or anything with ``async read(n)``).
        max_size: the largest frame accepted; a larger length prefix is refused
            before any of the body is read.

    Returns:
        The frame's bytes.

    Raises:
        FrameError: the frame could not be read; ``reason`` says why, the
            message in one line.
    """
    head = await _read_counted(stream, 4, "a frame's length", at_start=True)
    (size,) = struct.unpack(">I", head)
    if size > max_size:
        raise FrameError(f"a frame of {size} bytes, over the {max_size}-byte limit", "oversize")
    return await _read_counted(stream, size, f"a frame of {size} bytes")


async def _read_counted(stream: Any, n: int, what: str, *, at_start: bool = False) -> bytes:
    """``n`` bytes, every way of failing translated into a ``FrameError`` (``at_start``: where a frame begins)."""
    from libp2p.exceptions import BaseLibp2pError
    from libp2p.network.stream.exceptions import StreamEOF

    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except StreamEOF:
            chunk = b""
        except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise FrameError(f"the stream broke while reading {what}: {_one_line(exc)}", "broken") from exc
        if not chunk:
            if not buf and at_start:
                raise FrameError("the stream ended before a frame", "closed")
            raise FrameError(f"the stream ended {len(buf)} bytes into {what}", "truncated")
        buf += chunk
    return bytes(buf)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


async def write_frame(stream: Any, data: bytes) -> None:
    await stream.write(struct.pack(">I", len(data)) + data)
