"""Length-prefixed frames, sans-I/O: whatever the chunk boundaries, the same frames, within the limits."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.api.framing import FrameDecoder, encode_frames
from meshnode.errors import BodyTooLarge, FrameError
from meshnode.errors import WireError

RECORDS = st.lists(st.binary(max_size=300), max_size=30)


def body(records: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(r)) + r for r in records)


def cut(data: bytes, fractions: list[float]) -> list[bytes]:
    """``data`` split at the points ``fractions`` of its length (empty chunks included)."""
    points = sorted(int(f * len(data)) for f in fractions)
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def decode(chunks: list[bytes], max_frame: int = 1 << 20, max_total: int = 1 << 30) -> list[bytes]:
    decoder = FrameDecoder(max_frame=max_frame, max_total=max_total)
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    decoder.end()
    return frames


@given(records=RECORDS, fractions=st.lists(st.floats(0, 1), max_size=40))
def test_any_chunk_boundaries_give_the_same_frames(records: list[bytes], fractions: list[float]) -> None:
    assert decode(cut(body(records), fractions)) == records


@given(records=RECORDS, chunk_bytes=st.integers(1, 700))
def test_encode_frames_is_the_format_and_decodes_back(records: list[bytes], chunk_bytes: int) -> None:
    chunks = list(encode_frames(records, chunk_bytes))
    assert b"".join(chunks) == body(records)
    assert decode(chunks) == records
    # small records are gathered; no chunk but a large record's own is much over the size asked for
    assert all(len(c) < chunk_bytes + 304 or c in records for c in chunks)


def test_encode_frames_reads_its_records_lazily() -> None:
    taken: list[int] = []

    def records() -> Iterator[bytes]:
        for i in range(10_000):
            taken.append(i)
            yield b"x" * 10

    chunks = encode_frames(records(), chunk_bytes=1000)
    next(chunks)
    assert len(taken) < 100


@given(records=st.lists(st.binary(max_size=50), min_size=1, max_size=10), data=st.data())
def test_a_body_cut_inside_its_last_frame_is_an_error_saying_where(records: list[bytes], data: st.DataObject) -> None:
    whole = body(records)
    last = 4 + len(records[-1])
    short = whole[: len(whole) - data.draw(st.integers(1, last - 1), label="missing")]
    with pytest.raises(FrameError, match=rf"the body ends inside (the 4-byte length of )?frame {len(records)}\b"):
        decode(cut(short, data.draw(st.lists(st.floats(0, 1), max_size=5), label="fractions")))


@given(size=st.integers(101, 2**32 - 1), fractions=st.lists(st.floats(0, 1), max_size=3))
def test_a_frame_over_the_limit_is_refused_from_its_length_alone(size: int, fractions: list[float]) -> None:
    decoder = FrameDecoder(max_frame=100, max_total=1 << 40)
    chunks = cut(body([b"ok"]) + struct.pack(">I", size), fractions)
    with pytest.raises(BodyTooLarge, match=f"frame 2 is {size} bytes, over the 100-byte limit for one frame"):
        for chunk in chunks:
            decoder.feed(chunk)


def test_the_whole_body_is_limited_as_bytes_arrive() -> None:
    decoder = FrameDecoder(max_frame=1000, max_total=250)
    decoder.feed(body([b"a" * 100, b"b" * 100]))
    with pytest.raises(BodyTooLarge, match="the body is over the 250-byte limit"):
        decoder.feed(b"\x00" * 43)
    # a frame that cannot fit is refused as soon as its length is known
    decoder = FrameDecoder(max_frame=1000, max_total=250)
    with pytest.raises(BodyTooLarge, match="frame 2 .200 bytes. would take the body over the 250-byte limit"):
        decoder.feed(body([b"a" * 100]) + struct.pack(">I", 200))


def test_body_errors_are_wire_errors_and_too_large_is_a_frame_error() -> None:
    assert issubclass(BodyTooLarge, FrameError) and issubclass(FrameError, WireError)


def test_a_record_too_big_for_a_length_prefix() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**32

    with pytest.raises(FrameError, match="does not fit in a frame"):
        list(encode_frames([Huge()]))
