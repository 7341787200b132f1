"""The body of ``POST /v1/jobs``: a job as a stream of frames, so neither side holds all its inputs.

Content type ``application/x-meshnode-job``. The body is a sequence of frames
(``framing``: a 4-byte big-endian length, then that many bytes):

1. the header, a CBOR map ``{"module": bytes, "options": {...}}``;
2. one frame per input, in order: the input's bytes as they are (no CBOR).

Options (all but the last three required)::

    replicas, quorum, max_replicas   int, 1..32
    fuel                             int, 1..2**62
    memory                           int, 65536..4 GiB (bytes of linear memory)
    timeout_ms                       int, 1..7 days
    max_output                       int, 0..1 GiB
    entry                            text, a function name (default "run")
    nan_canonical                    bool (default false)
    label                            text, at most 200 characters (default "")

The whole body may be up to ``MAX_JOB_BYTES``, a frame up to ``MAX_INPUT_BYTES``.
This module imports nothing heavy: the CLI encodes with it, the node decodes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from ..errors import FrameError
from .framing import FrameDecoder, encode_frames

__all__ = [
    "JOB_CONTENT_TYPE",
    "MAX_INPUT_BYTES",
    "MAX_JOB_BYTES",
    "JobHeader",
    "decode_header",
    "encode_job",
    "job_decoder",
]

JOB_CONTENT_TYPE: Final = "application/x-meshnode-job"
MAX_JOB_BYTES: Final = 1 << 30
# The wire's limit on one subtask's input (``Subtask.input_size``) and on a module
# (``JobManifest.module_size``), both in core/manifest.py.
MAX_INPUT_BYTES: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class JobHeader:
    """The first frame of a job body: the module, and the options as sent (not yet checked)."""

    module: bytes
    options: dict[Any, Any]


def encode_job(module: bytes, options: dict[str, Any], inputs: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the chunks of a job body, reading ``inputs`` only as the chunks are consumed.

    Args:
        module: the task module.
        options: the job's options (see the module docstring).
        inputs: one subtask each, in order; any iterable, e.g. a generator over a file.

    Raises:
        FrameError: an input is over ``MAX_INPUT_BYTES`` or the body over ``MAX_JOB_BYTES``
            (raised from the iteration, when that input is reached).
    """
    header = cbor2.dumps({"module": module, "options": options})
    return encode_frames(_within_limits(itertools.chain([header], inputs)))


def _within_limits(records: Iterable[bytes]) -> Iterator[bytes]:
    """``records``, refused once one is over ``MAX_INPUT_BYTES`` or all are over ``MAX_JOB_BYTES``.

    The node refuses such a body too; checking here names the input and spares the upload.
    """
    total = 0
    for number, record in enumerate(records):
        what = "the module" if number == 0 else f"input {number - 1}"
        if len(record) > MAX_INPUT_BYTES:
            raise FrameError(f"{what} is {len(record)} bytes, over the {MAX_INPUT_BYTES}-byte limit")
        total += 4 + len(record)
        if total > MAX_JOB_BYTES:
            raise FrameError(f"the job is over the {MAX_JOB_BYTES}-byte limit of one submission at {what}")
        yield record


def job_decoder(max_job_bytes: int = MAX_JOB_BYTES) -> FrameDecoder:
    """A decoder with the job body's limits (the whole body's may be lowered)."""
    return FrameDecoder(max_frame=min(MAX_INPUT_BYTES, max_job_bytes), max_total=max_job_bytes)


def decode_header(frame: bytes | None) -> JobHeader:
    """The header frame of a job body, checked for shape (the options are checked by the node).

    Raises:
        FrameError: the body is empty, or the frame is not a CBOR map of module bytes and options.
    """
    if frame is None:
        raise FrameError("the body is empty: it needs a header frame and at least one input")
    try:
        header = cbor2.loads(frame)
    except (cbor2.CBORDecodeError, RecursionError) as exc:
        raise FrameError(f"the header frame is not CBOR: {exc}") from None
    if type(header) is not dict or set(header) != {"module", "options"}:
        raise FrameError("the header frame must be a CBOR map with exactly the keys 'module' and 'options'")
    module, options = header["module"], header["options"]
    if type(module) is not bytes:
        raise FrameError(f"the header's module must be bytes, not {type(module).__name__}")
    if type(options) is not dict:
        raise FrameError(f"the header's options must be a map, not {type(options).__name__}")
    return JobHeader(module, options)
