"""FrameReader and ThreadFrames: an async byte stream read as frames by a trio task, then by its worker thread."""

from __future__ import annotations

import struct
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from meshnode.api.frame_stream import FrameReader, ThreadFrames
from meshnode.api.framing import FrameDecoder
from meshnode.errors import BodyTooLarge, FrameError

from .test_framing import body, cut

RECORDS = st.lists(st.binary(max_size=200), min_size=1, max_size=40)
FRACTIONS = st.lists(st.floats(0, 1), max_size=40)


class Gone(Exception):
    """Stands in for Starlette's ClientDisconnect."""


async def stream(chunks: list[bytes], then: BaseException | None = None) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        await trio.sleep(0)  # other tasks run between chunks, as between socket reads
        yield chunk
    if then is not None:
        raise then


def reader(chunks: AsyncIterator[bytes], max_frame: int = 1 << 20, max_total: int = 1 << 30) -> FrameReader:
    return FrameReader(chunks, FrameDecoder(max_frame=max_frame, max_total=max_total), gone=(Gone,))


def first_in_task_rest_in_thread(
    chunks: AsyncGenerator[bytes, None], **limits: int
) -> tuple[bytes | None, list[bytes], FrameReader]:
    """What the submit route does: the header in the task, every other frame in a worker thread.

    Returns the first frame, the others, and the reader; raises what reading raised.
    """
    frames = reader(chunks, **limits)

    async def main() -> tuple[bytes | None, list[bytes], FrameReader]:
        async with aclosing(chunks):
            first = await frames.next_frame()
            rest = await trio.to_thread.run_sync(list, ThreadFrames(frames))
        return first, rest, frames

    try:
        return trio.run(main)
    except FrameError as exc:
        assert frames.error is exc  # kept for the route, whatever the thread's caller did with it
        raise


@given(records=RECORDS, fractions=FRACTIONS)
def test_any_chunk_boundaries_give_the_same_frames_across_the_thread(records: list[bytes], fractions: list[float]) -> None:
    first, rest, _ = first_in_task_rest_in_thread(stream(cut(body(records), fractions)))
    assert [first, *rest] == records


def test_an_empty_body_has_no_frames() -> None:
    assert first_in_task_rest_in_thread(stream([]))[:2] == (None, [])


@given(records=RECORDS, data=st.data())
def test_a_truncated_last_frame_is_a_clear_error_in_the_thread(records: list[bytes], data: st.DataObject) -> None:
    whole = body(records)
    short = whole[: len(whole) - data.draw(st.integers(1, 3 + len(records[-1])), label="missing")]
    with pytest.raises(FrameError, match=f"the body ends inside .*frame {len(records)}"):
        first_in_task_rest_in_thread(stream(cut(short, data.draw(FRACTIONS, label="fractions"))))


@given(size=st.integers(1001, 2**32 - 1), before=st.lists(st.binary(max_size=50), min_size=1, max_size=5))
def test_an_oversize_frame_is_refused_in_the_thread(size: int, before: list[bytes]) -> None:
    with pytest.raises(BodyTooLarge, match=f"frame {len(before) + 1} is {size} bytes"):
        first_in_task_rest_in_thread(stream([body(before) + struct.pack(">I", size) + b"partial"]), max_frame=1000)


def test_a_body_over_the_limit_is_refused_as_it_arrives() -> None:
    endless = stream([body([b"x" * 90])] * 1000)
    with pytest.raises(BodyTooLarge, match="over the 1000-byte limit"):
        first_in_task_rest_in_thread(endless, max_total=1000)


def test_a_sender_that_goes_away_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="the sender went away after 17 bytes"):
        first_in_task_rest_in_thread(stream([body([b"head", b"one"]), b"\x00\x00"], then=Gone()))


def test_a_failed_reader_stays_failed() -> None:
    frames = reader(stream([b"\x00"]))
    with pytest.raises(FrameError) as first:
        trio.run(frames.next_batch)
    with pytest.raises(FrameError) as again:
        trio.run(frames.next_batch)
    assert again.value is first.value


def test_the_thread_reads_the_body_only_as_it_consumes_frames() -> None:
    pulled: list[int] = []

    async def counted() -> AsyncGenerator[bytes, None]:
        for i in range(1000):
            pulled.append(i)
            yield body([b"%d" % i])

    def take_three(frames: Iterator[bytes]) -> list[bytes]:
        return [next(frames) for _ in range(3)]

    async def main() -> list[bytes]:
        async with aclosing(counted()) as chunks:
            return await trio.to_thread.run_sync(take_three, iter(ThreadFrames(reader(chunks))))

    assert trio.run(main) == [b"0", b"1", b"2"]
    assert len(pulled) == 3


async def test_cancelling_the_task_ends_a_thread_waiting_for_the_body() -> None:
    async def stalled() -> AsyncGenerator[bytes, None]:
        yield body([b"one"])
        await trio.sleep_forever()  # a client that stopped sending
        yield b""

    with trio.fail_after(5):
        async with aclosing(stalled()) as chunks:
            with trio.move_on_after(0.2) as scope:
                await trio.to_thread.run_sync(list, ThreadFrames(reader(chunks)))
    assert scope.cancelled_caught
