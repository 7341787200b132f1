"""Length-prefixed frames on libp2p streams (4-byte big-endian length, then the bytes).

``stream.read(n)`` may return fewer than n bytes, so reads loop; every frame has
a cap checked before its body is read, so a peer cannot make us buffer more
than the cap.
"""

from __future__ import annotations

import struct
from typing import Any

from ..errors import WireError

__all__ = ["read_frame", "write_frame"]


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


async def write_frame(stream: Any, data: bytes) -> None:
    await stream.write(struct.pack(">I", len(data)) + data)
