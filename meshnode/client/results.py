"""A job's results as ``meshnode.Client`` returns them, made from the API's result records."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from ..errors import TaskFailed

__all__ = ["Failure", "Result", "TaskFailed"]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a subtask (or a Python row) has no output: ``code`` such as ``task_error``, ``fuel_exhausted``,
    ``timeout`` or ``disputed`` (docs/design.md lists them), and a message for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Result:
    """One decided subtask (or, for a Python script, one row).

    ``output`` is the task's output parsed as JSON when it is JSON text, else its bytes (None
    unless ``ok``); ``executors`` are the peer IDs that ran it and agreed; ``log`` is what a
    Python row printed; ``verified_by`` says how it was verified: "quorum", "single+spotcheck"
    (one trusted executor, checked by a second) or "single" (one trusted executor alone); ``revised``
    marks a result that replaces one accepted on the word of an executor since caught lying.
    """

    index: int
    status: str  # "ok", "error" or "disputed"
    output: Any
    error: Failure | None
    executors: tuple[str, ...]
    log: str = ""
    verified_by: str = ""
    revised: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self) -> Any:
        """The output.

        Raises:
            TaskFailed: the subtask failed or was disputed.
        """
        if not self.ok:
            raise TaskFailed(self)
        return self.output

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Result:
        """The result a record of ``GET /v1/jobs/{id}/decided`` (or ``/results``) describes."""
        error = record.get("error")
        return cls(
            index=record["index"],
            status=record["status"],
            output=_output(record) if record["status"] == "ok" else None,
            error=Failure(error["code"], error["message"]) if error else None,
            executors=tuple(record.get("executors", ())),
            log=record.get("log", ""),
            verified_by=str(record.get("verified_by", "")),
            revised=bool(record.get("revised", False)),
        )


def _output(record: dict[str, Any]) -> Any:
    """A record's output: bytes when the node sent them as base64 (the output was not JSON), else the JSON value.

    The node writes a non-JSON output as ``{"base64": ...}``; an output that is itself such a JSON
    object is told apart by the record's hash, which is of the output's bytes.
    """
    value = record.get("output")
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            data = base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            return value
        if hashlib.sha256(data).hexdigest() == record.get("sha256"):
            return data
    return value
