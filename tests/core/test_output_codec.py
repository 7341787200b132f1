"""Outputs on the wire: compressed only when it pays, always given back byte for byte, bombs refused."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.job_messages import PushedResult
from meshnode.core.output_codec import Packed, pack, plain_output, pushed_result, unpack
from meshnode.errors import WireError


@given(st.one_of(st.binary(max_size=20_000), st.binary(max_size=64).map(lambda b: b * 500)))
def test_any_output_comes_back_byte_for_byte(output: bytes) -> None:
    packed = pack(output)
    assert unpack(packed.data, packed.zlib) == output
    assert plain_output(pushed_result(b"claim", packed)) == output


def test_no_output_travels_as_none() -> None:
    assert plain_output(pushed_result(b"claim", None)) is None


def test_compressible_outputs_shrink_and_random_ones_travel_as_they_are() -> None:
    counts = bytes(range(256)) * 1024
    assert pack(counts).zlib and len(pack(counts).data) < len(counts) // 10
    noise = os.urandom(1 << 16)
    assert pack(noise) == Packed(noise, False)
    assert pushed_result(b"c", pack(noise)) == PushedResult(claim=b"c", output=noise, zlib=False)


def test_a_zip_bomb_or_garbage_is_refused() -> None:
    bomb = PushedResult(claim=b"c", output=zlib.compress(bytes(10 << 20), 9), zlib=True)
    with pytest.raises(WireError, match="inflates beyond"):
        plain_output(bomb, limit=1 << 20)
    with pytest.raises(WireError, match="not valid zlib"):
        plain_output(PushedResult(claim=b"c", output=b"not zlib at all", zlib=True))
    truncated = zlib.compress(bytes(range(256)) * 64, 1)[:-5]
    with pytest.raises(WireError):
        plain_output(PushedResult(claim=b"c", output=truncated, zlib=True))
