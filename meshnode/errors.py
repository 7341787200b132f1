"""Every exception meshnode raises, split by who is at fault.

Each class says what it means and what the caller should do about it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.outcome import TaskError

__all__ = [
    "BodyTooLarge",
    "BuildError",
    "ConfigError",
    "FrameError",
    "IdentityError",
    "InputError",
    "JournalError",
    "MeshError",
    "NodeNotRunning",
    "PeerUnavailableError",
    "RefusedWork",
    "SandboxError",
    "WireError",
]


class MeshError(Exception):
    """Base class of every error meshnode raises on purpose."""


class ConfigError(MeshError):
    """A flag, environment variable or config value is invalid.

    The message names the setting and the value; fix it and try again.
    """


class IdentityError(MeshError):
    """The node's key file is missing, unreadable or corrupt.

    The message names the file. meshnode never overwrites an existing key:
    move the file away yourself if you really want a new identity.
    """


class InputError(MeshError):
    """A job's input or module file is missing, unreadable or malformed.

    The message names the file (and the line or row); nothing has run yet.
    """


class WireError(MeshError):
    """Bytes from the network (or a file) are not a valid meshnode message.

    Raised for malformed CBOR, unknown or missing fields, wrong types, oversize
    or truncated input, and bad signatures or proofs. The receiver drops the
    message; nothing it carried has been acted on.
    """


class BuildError(MeshError):
    """A task's C source could not be compiled to WebAssembly.

    The message carries the compiler's own diagnostics, or says how to install
    the toolchain (`pip install 'meshnode[build]'`) when it is missing.
    """


class SandboxError(MeshError):
    """A task module cannot be run at all (invalid wasm, forbidden imports, wrong exports).

    ``error`` is the ``TaskError`` (code and message) every run of it would give.
    Raised only by ``Sandbox.load``, for callers that want to refuse a module up
    front; ``Sandbox.run`` reports the same failure as a result instead.
    """

    def __init__(self, error: TaskError) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class SandboxGone(MeshError):
    """A sandbox process died while it ran a batch (the OOM killer, a crash in wasmtime), or the
    sandbox was closed: the batch has no results, and may run again elsewhere or in a new process."""


class JournalError(MeshError):
    """The node's journal (its SQLite file) cannot be read or written.

    ``kind`` says why: ``"full"`` (the disk or its quota is full), ``"io"`` (the
    operating system failed a read or write), ``"damaged"`` (the file is not a
    journal, is truncated or corrupt, or is missing although the data dir has
    jobs' files), or ``"newer"`` (a newer meshnode wrote it). The message is one
    line naming the file, with what to do. A running node treats ``full`` and
    ``io`` as passing: it pauses what needs the journal and retries; at start,
    ``damaged`` and ``newer`` stop the node before anything is changed.
    """

    def __init__(self, message: str, kind: str = "io") -> None:
        super().__init__(message)
        self.kind = kind


class PeerUnavailableError(MeshError):
    """A peer could not be reached: the dial failed or timed out, or a stream broke.

    ``__cause__`` holds the network library's own exception when there is one.
    Usually transient: the node retries later or works with other peers.
    """


class FrameError(WireError):
    """A length-prefixed frame could not be read: on a peer's stream, or in a job body sent to the API.

    ``reason`` says how in one word: ``closed`` (the stream ended before a
    frame), ``truncated`` (it ended inside one), ``oversize`` (over its limit),
    ``broken`` (the stream was reset or its connection failed) or ``malformed``.
    The message says where, in one line. Nothing in it has been acted on.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class BodyTooLarge(FrameError):
    """A job body sent to the API, or one of its frames, is over its size limit.

    Raised as soon as the bytes received (or a frame's declared length) pass the
    limit, before they are kept. The server answers 413; the sender should send less.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "oversize")


class NodeNotRunning(MeshError):
    """No node is running with this data dir (or it died without cleaning up).

    The message names the data dir and the command that starts a node there.
    Start one, or pass the ``--data-dir`` of the node you meant.
    """

    def __init__(self, data_dir: Path | None, reason: str | None = None, *, message: str | None = None) -> None:
        self.data_dir = data_dir
        self.reason = reason
        why = f": {reason}" if reason else ""
        super().__init__(message or (
            f"no meshnode is running with data dir {data_dir}{why} "
            f"(start one with: python -m meshnode --data-dir {shlex.quote(str(data_dir))})"
        ))  # fmt: skip

    @classmethod
    def at_url(cls, reason: str) -> NodeNotRunning:
        """No node answers at the URL a client was given (no data dir involved)."""
        return cls(None, reason, message=f"no meshnode answers: {reason}")


class RefusedWork(MeshError):
    """A subtask this node will not run; ``reason`` is sent back to whoever offered it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskFailed(MeshError):
    """A result asked for its output has none: its subtask failed or was disputed (``meshnode.Client``).

    ``result`` is the ``meshnode.Result``, whose ``error`` says why.
    """

    def __init__(self, result: Any) -> None:
        self.result = result
        super().__init__(f"subtask {result.index} failed: {result.error.code}: {result.error.message}")


class ApiError(MeshError):
    """The node answered a local API request with an error: ``status`` is the HTTP status, ``error`` its reason."""

    def __init__(self, message: str, status: int, error: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class JobRefused(ApiError):
    """The node refused a job before creating it: a module that cannot run, bad options, a full disk."""
