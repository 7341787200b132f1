"""The executor's signed claim about one run: what the owner cross-verifies.

An executor signs (job, index, replica, output hash, fuel used, engine) after
running a replica. The owner accepts a subtask when enough distinct executors
sign the same ``status`` and ``output_sha256`` (and, between executors on the
same engine, the same ``fuel_used``: fuel is deterministic, so a peer that skips
the work cannot match it).
"""

from __future__ import annotations

from .outcome import ERROR_CODES, TaskOutcome
from .peer_id import PeerId
from .wire import Bytes, Int, Optional, Peer, Str, message, wire

__all__ = ["ResultClaim"]

_STATUSES = ("ok", *ERROR_CODES)


@message("result", version=1, max_size=2048)
class ResultClaim:
    """One executor's signed statement of what one replica produced."""

    job_id: bytes = wire(Bytes(16, 16))
    index: int = wire(Int(0, 2**31 - 1))
    replica: int = wire(Int(0, 31))
    executor: PeerId = wire(Peer())
    status: str = wire(Str(32, choices=_STATUSES))  # "ok" or a failure code
    output_sha256: bytes | None = wire(Optional(Bytes(32, 32)))  # None unless status is "ok"
    output_size: int = wire(Int(0, 1 << 30))
    fuel_used: int = wire(Int(0, 2**62))
    engine: str = wire(Str(64))  # e.g. "wasmtime-50.0.1/x86_64": fuel compares only within one engine
    message: str = wire(Str(500))  # the failure's message, for people; not compared

    def check(self) -> str | None:
        if (self.status == "ok") != (self.output_sha256 is not None):
            return "output_sha256 is required with status ok, and only then"
        return None

    def agreement_key(self) -> tuple[str, bytes | None]:
        """What replicas must agree on (fuel is compared separately, within one engine)."""
        return self.status, self.output_sha256

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
            message=outcome.error.message[:500] if outcome.error else "",
        )
