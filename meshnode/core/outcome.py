"""What running one subtask produced: an output, or a failure with a stable code.

A sandbox failure is a result like any other: replicas that agree on the same
failure code let the owner fail a subtask deterministically instead of retrying
it forever. One code is the task's own verdict rather than the sandbox's:
``task_error``, a task refusing its input with a message of its own (see
``failure_message`` and docs/task_abi.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = ["ERROR_CODES", "MESSAGE_MAX", "TASK_ERROR", "TaskError", "TaskOutcome", "failure_message"]

TASK_ERROR: Final = "task_error"

ERROR_CODES: Final = (
    "fuel_exhausted",  # the fuel budget ran out (deterministic)
    "memory_limit",  # linear memory or tables would exceed the store limits
    "timeout",  # the wall-clock limit passed first
    "trap",  # the module trapped (unreachable, out-of-bounds access, stack overflow, ...)
    "bad_module",  # not valid wasm, a forbidden feature, or a forbidden import
    "abi_error",  # missing or mistyped exports, or pointers outside memory
    "output_too_large",  # the task returned more than max_output bytes
    TASK_ERROR,  # the task failed the subtask itself, with a message of its own (bad input)
)

# The most characters of a failure message a result claim carries: a task's own message is cut to
# this, so every executor's claim holds all of it and replicas compare the whole message.
MESSAGE_MAX: Final = 500
# Reading this many bytes of a message yields at least MESSAGE_MAX characters when it has them
# (UTF-8 takes at most 4 bytes a character, a bad byte decodes to one), so a task cannot make
# the host decode a gigabyte to show 500 characters.
MESSAGE_READ_MAX: Final = 4 * MESSAGE_MAX + 4
NO_MESSAGE: Final = "the task failed the subtask without a message"
# C0 controls, DEL and C1 controls: tab and line breaks become a space, the rest U+FFFD
_SAFE: Final = {c: " " if c in (0x09, 0x0A, 0x0D) else "\ufffd" for c in (*range(0x20), *range(0x7F, 0xA0))}


def failure_message(raw: bytes) -> str:
    """A task's failure message as people see it: its UTF-8 bytes decoded (a bad byte becomes U+FFFD),
    cut to ``MESSAGE_MAX`` characters, on one line, with no control characters.

    Tabs and line breaks become spaces and every other C0 or C1 control character (and DEL) becomes
    U+FFFD, so the message cannot move a terminal's cursor or forge a log line. The rules use code
    point ranges, not the Unicode database, so every host makes the same text from the same bytes.
    """
    text = raw[:MESSAGE_READ_MAX].decode("utf-8", errors="replace")[:MESSAGE_MAX]
    return text.translate(_SAFE) or NO_MESSAGE


@dataclass(frozen=True, slots=True)
class TaskError:
    """A failed run. ``code`` is one of ``ERROR_CODES``; ``message`` is for people."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"unknown task error code {self.code!r}")


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """The result of one run: exactly one of ``output`` and ``error`` is set.

    ``fuel_used`` is deterministic for a given module, input and engine; ``seconds``
    is wall time and is not.
    """

    output: bytes | None
    error: TaskError | None
    fuel_used: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def output_sha256(self) -> bytes | None:
        return None if self.output is None else hashlib.sha256(self.output).digest()

    @classmethod
    def failed(cls, code: str, message: str, *, fuel_used: int = 0, seconds: float = 0.0) -> TaskOutcome:
        return cls(output=None, error=TaskError(code, message), fuel_used=fuel_used, seconds=seconds)
