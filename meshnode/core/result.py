"""The executor's claim about one run: what the owner cross-verifies.

An executor claims (job, index, replica, output hash, fuel used, engine) after
running a replica, and pushes the claim itself: the owner takes a claim only
from the peer it names as executor, authenticated by the stream it came on. The
owner accepts a subtask when enough distinct executors claim the same
``status`` and ``output_sha256`` (and, between executors on the
same engine, the same ``fuel_used``: fuel is deterministic, so a peer that skips
the work cannot match it). A ``task_error`` is the task's own answer, so its
message counts too: replicas must agree on it as they agree on an output.
"""

from __future__ import annotations

from typing import Final

from .outcome import ERROR_CODES, MESSAGE_MAX, TASK_ERROR, TaskOutcome
from .peer_id import PeerId
from .wire import Bytes, Int, Optional, Peer, Str, message, wire

__all__ = ["CLAIM_MAX_SIZE", "ResultClaim"]

_STATUSES = ("ok", *ERROR_CODES)
# Room for every field at its largest, a message of MESSAGE_MAX four-byte characters included.
CLAIM_MAX_SIZE: Final = 4096


@message("result", version=1, max_size=CLAIM_MAX_SIZE)
class ResultClaim:
    """One executor's statement of what one replica produced."""

    job_id: bytes = wire(Bytes(16, 16))
    index: int = wire(Int(0, 2**31 - 1))
    replica: int = wire(Int(0, 31))
    executor: PeerId = wire(Peer())
    status: str = wire(Str(32, choices=_STATUSES))  # "ok" or a failure code
    output_sha256: bytes | None = wire(Optional(Bytes(32, 32)))  # None unless status is "ok"
    output_size: int = wire(Int(0, 1 << 30))
    fuel_used: int = wire(Int(0, 2**62))
    engine: str = wire(Str(64))  # e.g. "wasmtime-50.0.1/x86_64": fuel compares only within one engine
    message: str = wire(Str(MESSAGE_MAX))  # the failure's message: compared for task_error only

    def check(self) -> str | None:
        if (self.status == "ok") != (self.output_sha256 is not None):
            return "output_sha256 is required with status ok, and only then"
        return None

    def agreement_key(self) -> tuple[str, bytes | None, str]:
        """What replicas must agree on (fuel is compared separately, within one engine): the status,
        the output's hash, and for a ``task_error`` the task's message. Any other failure's message
        is the host's wording (wasmtime's, say), which may differ between honest executors."""
        return self.status, self.output_sha256, self.message if self.status == TASK_ERROR else ""

    @classmethod
    def of(
        cls, job_id: bytes, index: int, replica: int, executor: PeerId, outcome: TaskOutcome, engine: str
    ) -> ResultClaim:
        """The claim for a finished run."""
        return cls(
            job_id=job_id,
            index=index,
            replica=replica,
            executor=executor,
            status=outcome.error.code if outcome.error else "ok",
            output_sha256=outcome.output_sha256,
            output_size=len(outcome.output) if outcome.output is not None else 0,
            fuel_used=outcome.fuel_used,
            engine=engine,
            message=outcome.error.message[:MESSAGE_MAX] if outcome.error else "",
        )
