"""The job body format: a header frame and one frame per input, encoded lazily, within the limits."""

from __future__ import annotations

from collections.abc import Iterator

import cbor2
import pytest

from meshnode.api import job_body
from meshnode.errors import FrameError
from meshnode.api.job_body import decode_header, encode_job, job_decoder

OPTIONS = {"replicas": 1, "quorum": 1}


def decoded(chunks: Iterator[bytes]) -> list[bytes]:
    decoder = job_decoder()
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    decoder.end()
    return frames


def test_a_job_is_its_header_then_its_inputs_as_they_are() -> None:
    inputs = [b"", b"1", b"\x00" * 70_000, b'{"x": 1}']
    header, *rest = decoded(encode_job(b"\x00asm", OPTIONS, inputs))
    assert rest == inputs
    assert cbor2.loads(header) == {"module": b"\x00asm", "options": OPTIONS}
    assert decode_header(header) == job_body.JobHeader(b"\x00asm", OPTIONS)


def test_inputs_are_read_only_as_the_body_is_sent() -> None:
    read = 0

    def inputs() -> Iterator[bytes]:
        nonlocal read
        for i in range(1_000_000):
            read += 1
            yield b"%d" % i

    body = encode_job(b"\x00asm", OPTIONS, inputs())
    next(body)
    next(body)
    assert read < 20_000


def test_an_input_or_a_job_over_the_limits_is_refused_before_it_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_body, "MAX_INPUT_BYTES", 100)
    monkeypatch.setattr(job_body, "MAX_JOB_BYTES", 1000)
    with pytest.raises(FrameError, match="input 2 is 101 bytes, over the 100-byte limit"):
        list(encode_job(b"m", OPTIONS, [b"", b"", b"x" * 101]))
    with pytest.raises(FrameError, match="the job is over the 1000-byte limit of one submission at input 9"):
        list(encode_job(b"m", OPTIONS, [b"x" * 100] * 20))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (None, "the body is empty"),
        (b"\xff", "the header frame is not CBOR"),
        (cbor2.dumps({"module": b"m"}), "exactly the keys 'module' and 'options'"),
        (cbor2.dumps({"module": b"m", "options": {}, "inputs": []}), "exactly the keys 'module' and 'options'"),
        (cbor2.dumps({"module": [0, 97], "options": {}}), "the header.s module must be bytes, not list"),
        (cbor2.dumps({"module": b"m", "options": [1]}), "the header's options must be a map, not list"),
    ],
)
def test_a_bad_header_says_what_is_wrong(frame: bytes | None, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_header(frame)
