"""What running one subtask produced: an output, or a failure with a stable code.

A sandbox failure is a result like any other: replicas that agree on the same
failure code let the owner fail a subtask deterministically instead of retrying
it forever.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = ["ERROR_CODES", "TaskError", "TaskOutcome"]

ERROR_CODES: Final = (
    "fuel_exhausted",  # the fuel budget ran out (deterministic)
    "memory_limit",  # linear memory or tables would exceed the store limits
    "timeout",  # the wall-clock limit passed first
    "trap",  # the module trapped (unreachable, out-of-bounds access, stack overflow, ...)
    "bad_module",  # not valid wasm, a forbidden feature, or a forbidden import
    "abi_error",  # missing or mistyped exports, or pointers outside memory
    "output_too_large",  # the task returned more than max_output bytes
)


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
