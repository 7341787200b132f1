"""Length-prefixed frames: how a streamed request body is cut into records.

A body is a sequence of frames, each a 4-byte big-endian length and then that
many bytes. Nothing marks the end: the body ends after a whole frame, or it is
truncated. This module is sans-I/O (no trio, no sockets): ``encode_frames``
turns records into body chunks for a sender, and ``FrameDecoder`` turns the
chunks a receiver got, cut wherever the network cut them, back into records.
``frame_stream`` drives a decoder from an async byte stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final

from ..errors import BodyTooLarge, FrameError

__all__ = ["PREFIX_SIZE", "FrameDecoder", "encode_frames"]

_PREFIX: Final = struct.Struct(">I")
PREFIX_SIZE: Final = _PREFIX.size

# Chunks a sender writes: big enough that a million small frames are a few hundred
# writes (one per frame would be a million chunk headers and system calls), small
# enough to keep nothing much in memory.
DEFAULT_CHUNK_BYTES: Final = 64 << 10


def encode_frames(records: Iterable[bytes], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the body chunks that carry ``records``, one frame each, in order.

    Small frames are gathered into chunks of about ``chunk_bytes``; a larger
    record goes out as a chunk of its own, not copied into a buffer.

    Raises:
        FrameError: a record is 4 GiB or more (the length prefix cannot say so).
    """
    buffer = bytearray()
    for record in records:
        prefix = _prefix(len(record))
        if len(record) >= chunk_bytes:
            if buffer:
                yield bytes(buffer)
                buffer.clear()
            yield prefix
            yield record
            continue
        buffer += prefix
        buffer += record
        if len(buffer) >= chunk_bytes:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _prefix(size: int) -> bytes:
    try:
        return _PREFIX.pack(size)
    except struct.error:
        raise FrameError(f"a record of {size} bytes does not fit in a frame (the limit is 4 GiB)") from None


class FrameDecoder:
    """Cut a body back into frames, whatever the chunk boundaries, within size limits.

    Feed it the chunks as they arrive, then call ``end`` once the body is over.
    It holds at most one incomplete frame between calls.

    Args:
        max_frame: the largest frame allowed, in bytes (its length prefix not included).
        max_total: the largest body allowed, in bytes, prefixes included.
    """

    def __init__(self, *, max_frame: int, max_total: int) -> None:
        self.max_frame = max_frame
        self.max_total = max_total
        self.received = 0  # bytes fed so far
        self.frames = 0  # frames returned so far
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next chunk of the body; return the frames it completes, in order.

        Raises:
            BodyTooLarge: the body is now over ``max_total``, or a frame's length
                prefix says it is over ``max_frame`` or would take the body over
                ``max_total`` (refused from its prefix, before its bytes arrive).
        """
        self.received += len(chunk)
        if self.received > self.max_total:
            raise BodyTooLarge(f"the body is over the {self.max_total}-byte limit")
        buffer = self._buffer
        buffer += chunk
        frames: list[bytes] = []
        start = 0
        # The memoryview slices each frame out with one copy; it must be released
        # before the consumed bytes are deleted (a bytearray with a view cannot resize).
        with memoryview(buffer) as view:
            while len(buffer) - start >= PREFIX_SIZE:
                (size,) = _PREFIX.unpack_from(buffer, start)
                self._check_size(size, start)
                end = start + PREFIX_SIZE + size
                if end > len(buffer):
                    break
                frames.append(bytes(view[start + PREFIX_SIZE : end]))
                self.frames += 1
                start = end
        del buffer[:start]
        return frames

    def _check_size(self, size: int, start: int) -> None:
        """Refuse frame number ``self.frames + 1`` from its length prefix, which begins at ``start``."""
        where = f"frame {self.frames + 1}"
        if size > self.max_frame:
            raise BodyTooLarge(f"{where} is {size} bytes, over the {self.max_frame}-byte limit for one frame")
        body_end = self.received - len(self._buffer) + start + PREFIX_SIZE + size
        if body_end > self.max_total:
            raise BodyTooLarge(f"{where} ({size} bytes) would take the body over the {self.max_total}-byte limit")

    def end(self) -> None:
        """The body is over: check that it ended on a frame boundary.

        Raises:
            FrameError: the body stopped inside a frame's length prefix or its bytes.
        """
        held = len(self._buffer)
        if held == 0:
            return
        where = f"frame {self.frames + 1}"
        if held < PREFIX_SIZE:
            raise FrameError(f"the body ends inside the {PREFIX_SIZE}-byte length of {where}")
        (size,) = _PREFIX.unpack_from(self._buffer, 0)
        raise FrameError(f"the body ends inside {where}: {held - PREFIX_SIZE} of its {size} bytes arrived")
