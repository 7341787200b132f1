"""Outputs on the wire: compressed only when it pays, always given back byte for byte, bombs refused."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.job_messages import PushedResult
from meshnode.core.output_codec import PLAIN, ZLIB, ZSTD, Packed, pack, plain_output, pushed_result, unpack
from meshnode.errors import WireError


@given(st.one_of(st.binary(max_size=20_000), st.binary(max_size=64).map(lambda b: b * 500)))
def test_any_output_comes_back_byte_for_byte(output: bytes) -> None:
    packed = pack(output)
    assert unpack(packed.data, packed.codec) == output
    assert plain_output(pushed_result(b"claim", packed)) == output


def test_no_output_travels_as_none() -> None:
    assert plain_output(pushed_result(b"claim", None)) is None


def test_compressible_outputs_shrink_and_random_ones_travel_as_they_are() -> None:
    counts = bytes(range(256)) * 1024
    assert pack(counts).codec == ZSTD and len(pack(counts).data) < len(counts) // 10
    noise = os.urandom(1 << 16)
    assert pack(noise) == Packed(noise, PLAIN)
    assert pushed_result(b"c", pack(noise)) == PushedResult(claim=b"c", output=noise, codec=PLAIN)


def test_outputs_packed_with_zlib_by_an_earlier_version_still_unpack() -> None:
    counts = bytes(range(256)) * 1024
    assert unpack(zlib.compress(counts, 1), ZLIB) == counts


def test_a_zstd_bomb_or_garbage_is_refused() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(10 << 20))
    with pytest.raises(WireError, match="says more than"):
        plain_output(PushedResult(claim=b"c", output=bomb, codec=ZSTD), limit=1 << 20)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(1000))
    with pytest.raises(WireError, match="does not say its size"):
        unpack(unsized, ZSTD)
    with pytest.raises(WireError, match="not valid zstd"):
        plain_output(PushedResult(claim=b"c", output=b"not zstd at all", codec=ZSTD))
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(range(256)) * 64)
    for damaged in (frame[:-5], frame + b"tail", frame + frame):
        with pytest.raises(WireError):
            unpack(damaged, ZSTD)


def test_a_frame_that_lies_about_its_size_is_refused_before_it_grows() -> None:
    frame = zstandard.ZstdCompressor(level=1).compress(b"\1" * 60_000)
    at = frame.find(struct.pack("<H", 60_000 - 256))  # the 2-byte content size field (value - 256)
    liar = frame[:at] + struct.pack("<H", 300 - 256) + frame[at + 2 :]
    assert zstandard.get_frame_parameters(liar).content_size == 300
    with pytest.raises(WireError, match="not valid zstd"):
        unpack(liar, ZSTD)


def test_a_zip_bomb_or_garbage_in_zlib_is_refused() -> None:
    with pytest.raises(WireError, match="inflates beyond"):
        unpack(zlib.compress(bytes(10 << 20), 9), ZLIB, limit=1 << 20)
    with pytest.raises(WireError, match="not valid zlib"):
        unpack(b"not zlib at all", ZLIB)
    with pytest.raises(WireError):
        unpack(zlib.compress(bytes(range(256)) * 64, 1)[:-5], ZLIB)


def test_an_unknown_codec_is_refused() -> None:
    with pytest.raises(WireError, match="unknown output codec 7"):
        unpack(b"x", 7)
