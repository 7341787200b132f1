"""The vocabulary of a job's owner: replica names, events in, instructions out, outcomes.

``JobOwner`` (``owner.py``) is the state machine that consumes these events and
produces these instructions; the node carries the instructions out (sends grants,
revocations and acknowledgements, journals decided outcomes, feeds reputation)
and turns network messages, departures and its clock into events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from .peer_id import PeerId
from .result import ResultClaim
from .verify import Disputed, Verified

__all__ = [
    "HELD_TOO_LONG", "LEASE_LAPSED", "PEER_GONE", "Ack", "Cancel", "ClaimReceived", "Event", "Failed", "Grant", "Instruction",
    "JobFinished", "Outcome", "PeerLeft", "Progress", "ReleaseReplicas", "RenewLeases", "Renewed", "Reopen",
    "Reopened", "ReplicaLost", "ReplicaRef", "ReplicasAdded", "Revoke", "StealRequest", "SubtaskDecided", "Tick",
    "TransferReplicas", "Transferred", "VerifiedBy",
]  # fmt: skip

# How a subtask's output was verified (output lines say it): by a quorum of distinct executors; by one
# trusted executor whose result a random spot check confirmed; by one trusted executor alone.
VerifiedBy = Literal["quorum", "single+spotcheck", "single"]

LEASE_LAPSED: Final = "lease_lapsed"  # error codes of a subtask that ran out of attempts
PEER_GONE: Final = "peer_gone"
HELD_TOO_LONG: Final = "held_too_long"  # renewed past the job's bound on one holder keeping one replica


@dataclass(frozen=True, slots=True, order=True)
class ReplicaRef:
    """One replica of one subtask; ordered by index, then replica, as the deque is."""

    index: int
    replica: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A subtask that ``max_attempts`` distinct nodes took and never answered for."""

    code: str  # the last error: LEASE_LAPSED or PEER_GONE
    message: str


Outcome = Verified | Disputed | Failed


# --- events (in) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StealRequest:
    """``thief`` (a peer, or the owner's own slots) asks for up to ``n`` replicas."""

    thief: PeerId
    n: int
    request_id: int  # chosen by the thief, growing with each request it sends
    now: float


@dataclass(frozen=True, slots=True)
class RenewLeases:
    holder: PeerId
    replicas: tuple[ReplicaRef, ...]
    now: float


@dataclass(frozen=True, slots=True)
class ClaimReceived:
    claim: ResultClaim  # its signature already checked against claim.executor by the edge
    now: float
    untrusted: frozenset[PeerId] = frozenset()  # Reputation.barred(): they never count towards quorum


@dataclass(frozen=True, slots=True)
class ReleaseReplicas:
    """The holder gives replicas back unrun (a stale grant, or it is shutting down)."""

    holder: PeerId
    replicas: tuple[ReplicaRef, ...]
    now: float


@dataclass(frozen=True, slots=True)
class TransferReplicas:
    """``holder`` was robbed in turn: it asks to hand replicas it has not started to ``to``."""

    holder: PeerId
    to: PeerId
    replicas: tuple[ReplicaRef, ...]
    now: float


@dataclass(frozen=True, slots=True)
class PeerLeft:
    peer: PeerId
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the job: nothing more is handed out, every lease is revoked, undecided subtasks stay undecided."""

    now: float


@dataclass(frozen=True, slots=True)
class Reopen:
    """Decide these subtasks again without ``distrusted``: it alone vouched for them and was since caught lying.

    The driver names the subtasks (it journalled who vouched for what); the owner
    reopens those that are decided, bars ``distrusted`` from them, and wants a
    quorum of others. Their new verdicts replace the old ones.
    """

    distrusted: PeerId
    indices: tuple[int, ...]
    now: float


Event = StealRequest | RenewLeases | ClaimReceived | ReleaseReplicas | TransferReplicas | PeerLeft | Tick | Cancel | Reopen


# --- instructions (out) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to a steal request (possibly empty): run these, renew before ``expires``."""

    thief: PeerId
    request_id: int
    replicas: tuple[ReplicaRef, ...]
    expires: float


@dataclass(frozen=True, slots=True)
class Transferred:
    """The replicas of a ``TransferReplicas`` that now belong to ``to`` (the others stay with the holder)."""

    holder: PeerId
    to: PeerId
    replicas: tuple[ReplicaRef, ...]
    expires: float


@dataclass(frozen=True, slots=True)
class Renewed:
    holder: PeerId
    replicas: tuple[ReplicaRef, ...]
    expires: float


@dataclass(frozen=True, slots=True)
class Revoke:
    """Tell ``holder`` to stop: the subtask is decided, or the replica is no longer its to run."""

    holder: PeerId
    replicas: tuple[ReplicaRef, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a claim; any answer ends the executor's retries of it."""

    executor: PeerId
    replica: ReplicaRef
    status: Literal["accepted", "duplicate", "late", "rejected"]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaLost:
    """``holder`` took a replica and did not answer: a failure for its reputation, if ``credible``.

    A replica handed from one thief to another and never renewed by the new holder is
    not credible: either side may be lying about it, so neither's reputation pays; the
    attempt is counted against the node that handed it over.
    """

    holder: PeerId
    replica: ReplicaRef
    reason: str  # LEASE_LAPSED, PEER_GONE or HELD_TOO_LONG
    credible: bool = True


@dataclass(frozen=True, slots=True)
class ReplicasAdded:
    """Replicas added to the deque (the surplus grew).

    ``why``: "disagreement" (the claims so far do not reach quorum), "untrusted" (an
    adaptive job's subtask went to an executor that may not decide it alone), or
    "spot_check" (a trusted executor's result drew a check).
    """

    replicas: tuple[ReplicaRef, ...]
    why: Literal["disagreement", "untrusted", "spot_check"] = "disagreement"


@dataclass(frozen=True, slots=True)
class Reopened:
    """These decided subtasks are undecided again (``Reopen``): their old verdicts stand until new ones replace them."""

    indices: tuple[int, ...]
    distrusted: PeerId


@dataclass(frozen=True, slots=True)
class SubtaskDecided:
    """A final outcome: journal it before acting on it. ``Verified`` feeds reputation and trust.

    ``revised``: the subtask had been decided before and was reopened; this verdict replaces that one.
    """

    index: int
    outcome: Outcome
    verified_by: VerifiedBy = "quorum"
    revised: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    total: int
    verified: int  # verified with an output
    failed: int  # a verified failure code, or out of attempts
    disputed: int
    running: int  # undecided subtasks with a replica leased
    queued: int  # replicas in the deque
    working: int = 0  # distinct nodes holding leases (the owner's own slots included)


@dataclass(frozen=True, slots=True)
class JobFinished:
    progress: Progress


Instruction = (
    Grant | Transferred | Renewed | Revoke | Ack | ReplicaLost | ReplicasAdded | Reopened | SubtaskDecided | JobFinished
)
