"""Frames from an async byte stream, for a trio task and for the worker thread it starts.

A request handler reads the first frames of a body itself (``FrameReader``),
then hands the rest to code that runs in a worker thread
(``trio.to_thread.run_sync``) and wants a plain iterator. ``ThreadFrames`` is
that iterator: each time it runs dry it calls back into trio
(``trio.from_thread.run``) for the frames the next chunk of the body completes,
so the body is read only as fast as the thread consumes it, and at most one
chunk's frames (plus one incomplete frame) are held at a time.

Cancellation: the callback runs in the task that started the thread, under its
cancel scopes. If that task is cancelled (the node is stopping) while the thread
waits for the body, ``trio.Cancelled`` surfaces in the thread from
``trio.from_thread.run``; the thread's code lets it propagate, and the task gets
it back from ``trio.to_thread.run_sync`` as usual.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator

import trio

from ..errors import FrameError
from .framing import FrameDecoder

__all__ = ["FrameReader", "ThreadFrames"]


class FrameReader:
    """Frames from ``chunks``, an async iterator of body chunks cut anywhere.

    Use ``next_frame`` in the task; hand the rest to a thread with ``ThreadFrames``.
    Errors raise ``FrameError`` (or ``BodyTooLarge``) and every later call raises
    the same one; the error is also kept in ``error``, so a caller can tell a
    body problem from other failures even if code in between wrapped it.

    Args:
        chunks: the body, e.g. Starlette's ``request.stream()``. The caller closes it.
        decoder: checks sizes and cuts frames.
        gone: exception types that mean the sender went away mid-body (e.g.
            Starlette's ``ClientDisconnect``): they become a ``FrameError``.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        decoder: FrameDecoder,
        gone: tuple[type[Exception], ...] = (),
    ) -> None:
        self._chunks = chunks
        self._decoder = decoder
        self._gone = gone
        self._pending: deque[bytes] = deque()
        self._ended = False
        self.error: FrameError | None = None

    async def next_frame(self) -> bytes | None:
        """The next frame, or None once the body has ended on a frame boundary.

        Raises:
            FrameError: the body is malformed, too large, or the sender went away.
        """
        if not self._pending:
            self._pending.extend(await self.next_batch())
        return self._pending.popleft() if self._pending else None

    async def next_batch(self) -> list[bytes]:
        """The frames already cut, else those the next chunks complete; ``[]`` once the body has ended.

        Raises:
            FrameError: the body is malformed, too large, or the sender went away.
        """
        if self.error is not None:
            raise self.error
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            return batch
        try:
            return await self._read_batch()
        except FrameError as exc:
            self.error = exc
            raise

    async def _read_batch(self) -> list[bytes]:
        while not self._ended:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                self._decoder.end()
                break
            except self._gone:
                raise FrameError(
                    f"the sender went away after {self._decoder.received} bytes, inside the body"
                ) from None
            frames = self._decoder.feed(chunk)
            if frames:
                return frames
        return []


class ThreadFrames:
    """A blocking iterator over the rest of a ``FrameReader``'s frames, for a trio worker thread.

    Iterate it only in a thread started by ``trio.to_thread.run_sync`` (it calls
    ``trio.from_thread.run``), and only once.

    Raises (while iterating):
        FrameError: the body is malformed, too large, or the sender went away.
        trio.Cancelled: the task that started the thread was cancelled.
    """

    def __init__(self, reader: FrameReader) -> None:
        self._reader = reader

    def __iter__(self) -> Iterator[bytes]:
        # One round trip into trio (tens of microseconds) per chunk of the body, not per
        # frame: hypercorn hands the app up to 64 KiB at a time, often thousands of inputs.
        while batch := trio.from_thread.run(self._reader.next_batch):
            yield from batch
