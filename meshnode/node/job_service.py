"""The node's answers to the job protocol (``net/job_protocol.py``): the owner's side and the thief's.

As an owner, the node serves steals from its jobs (then, for a thief with
nothing queued, from the work it stole itself), takes pushed results, renewals,
refusals and transfers, each through its jobs' driver (``JobManager.drive``). As
a thief, it takes revocations from the owners of the work it holds.

Every pushed claim is checked before the job sees it: the executor it names
must be the peer on the stream, as Noise authenticated it (a node cannot push
another node's results), and the output must hash to the claim's hash. A
claim that fails is acknowledged as ``rejected`` with the reason; the job
answers the rest (accepted, duplicate, late). A paused job (its journal refused
a write) acknowledges nothing: its executors push again later.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from ..core import wire
from ..core.credit import CreditAsk, CreditReply
from ..core.job import ReleaseReplicas, RenewLeases, ReplicaRef, StealRequest, TransferReplicas
from ..core.job_messages import (
    INLINE_MODULE_MAX, JobGrant, LeaseRenew, ReplicaId, ResultAck, ResultAckItem, ResultPush, Revocation, StealAsk, StealReply,
    TransferAsk, TransferReply, WorkRefused,
)  # fmt: skip
from ..core.output_codec import Packed, plain_output
from ..core.peer_id import PeerId
from ..core.result import ResultClaim
from ..errors import JournalError, WireError
from .crediting import Crediting
from .owning import JobManager, RunningJob

if TYPE_CHECKING:
    from .stealing import Workers

__all__ = ["GrantPolicy", "MeshJobService"]

log = logging.getLogger("meshnode")

# How many replicas a thief may have of what it asked for (its reputation decides).
GrantPolicy = Callable[[PeerId, int], int]


class MeshJobService:
    """The ``JobService`` of a node: see the module docstring.

    Args:
        manager: the jobs this node owns.
        workers: the node's slots and the work it stole.
        policy: how many replicas a thief may have.
        on_release: called when our own slots may find work in a job again: replicas came back unrun, or
            verdicts let our slots take new subtasks (to wake idle slots).
        on_nothing_left: called when a thief is told nothing is left for it (it then waits for news of work).
        crediting: signs and hands out credit receipts (none: nothing is ever granted here).
    """

    def __init__(
        self, manager: JobManager, workers: Workers, policy: GrantPolicy, on_release: Callable[[], None],
        crediting: Crediting | None = None, on_nothing_left: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        self.crediting = crediting
        self.on_nothing_left = on_nothing_left
        self.manager = manager
        self.workers = workers
        self.policy = policy
        self.on_release = on_release

    async def steal(self, remote: PeerId, ask: StealAsk) -> StealReply:
        allowed = self.policy(remote, ask.n)
        if allowed <= 0:
            self.manager.metrics.stole("owner", 0)
            return StealReply(request_id=ask.request_id, grants=(), lease_ms=0,
                              refused="peers with a better record are waiting for work", surplus=0)  # fmt: skip
        reply = await self._grant(remote, ask, min(ask.n, allowed))
        if not reply.grants:
            reply = await self.workers.resteal(remote, ask) or reply
        self.manager.metrics.stole("owner", sum(len(g.subtasks) for g in reply.grants))
        if reply.surplus == 0:
            self.on_nothing_left()
        return reply

    async def _grant(self, thief: PeerId, ask: StealAsk, wanted: int) -> StealReply:
        grants: list[JobGrant] = []
        lease_ms = 0
        now = time.monotonic()
        for job in list(self.manager.jobs.values()):
            if wanted <= 0:
                break
            if job.owner.finished or job.paused or job.owner.surplus() == 0 or job.manifest.runtime not in ask.runtimes:
                continue
            for grant in (await self.manager.drive(job, StealRequest(thief, wanted, ask.request_id, now))).grants:
                if not grant.replicas:
                    continue
                try:
                    subtasks = tuple(_subtasks(self.manager, job, grant.replicas))
                except JournalError as exc:  # the thief gets nothing of this job; its leases lapse
                    log.warning("job %s: cannot hand out work: %s", job.job_id.hex()[:12], exc)
                    continue
                grants.append(JobGrant(manifest=job.envelope, subtasks=subtasks, module=self._inline_module(job, thief)))
                job.stats.input_bytes_sent += sum(len(s) for s in subtasks)  # as encoded: inputs and their proofs
                lease_ms = max(lease_ms, round((grant.expires - now) * 1000))
                wanted -= len(grant.replicas)
        # With nothing granted, nothing is left for this thief, whatever others could take: it should
        # not come back before it hears of new work. Unless a job only holds it back while the others
        # catch up (owner.MAX_AHEAD): told what is left, it comes back soon (thief.HELD_BACK_WAIT).
        # Measured: two nodes, 10,000 echo subtasks x2, the thief told "nothing" waited a second for
        # news of work, and the owner, bound to subtasks the thief had to run, waited with it.
        live = [j for j in self.manager.jobs.values() if not j.owner.finished]
        runnable = (j for j in live if not j.paused and j.manifest.runtime in ask.runtimes)
        soon = grants or any(j.owner.held_back(thief) for j in runnable)
        surplus = sum(j.owner.surplus() for j in live) if soon else 0
        return StealReply(request_id=ask.request_id, grants=tuple(grants), lease_ms=lease_ms, refused="", surplus=surplus)

    def _inline_module(self, job: RunningJob, thief: PeerId) -> bytes:
        """The job's module for the thief's first grant of the job, if it is small; else empty (fetched by hash).

        A grant that is lost on the way costs nothing: the thief then fetches the module by hash.
        """
        if thief in job.module_sent or job.manifest.module_size > INLINE_MODULE_MAX:
            return b""
        try:
            module = self.manager.blobs.get(job.manifest.module_sha256)
        except OSError:
            module = None
        if module is None:
            return b""
        job.module_sent.add(thief)
        return module

    async def push(self, remote: PeerId, push: ResultPush) -> ResultAck:
        acks: list[ResultAckItem] = []
        by_job: dict[bytes, list[tuple[ResultClaim, Packed | None]]] = {}
        # unpacking and hashing megabytes of outputs (with the GIL released) is no work for the event
        # loop; decoding claims holds the GIL wherever it runs, and a few KiB cost less than the trip
        large = sum(len(p.output or b"") for p in push.results) > INLINE_CHECK_BYTES
        checked = await trio.to_thread.run_sync(_checked, remote, push) if large else _checked(remote, push)
        for claim, output, problem in checked:
            problem = problem or self._problem(claim)
            if problem is not None:
                acks.append(_ack(claim, *problem))
            else:
                by_job.setdefault(claim.job_id, []).append((claim, output if claim.status == "ok" else None))
        for job_id, claims in by_job.items():
            job = self.manager.jobs.get(job_id)
            if job is None or job.paused:
                continue  # no answer: the executor keeps the results and pushes them again later
            job.stats.output_bytes_received += sum(len(output.data) for _, output in claims if output is not None)
            held_back = job.owner.held_back(self.manager.identity.peer_id)
            try:
                said = await self.manager.receive_claims(job, claims)
            except JournalError:
                continue  # the verdicts wait for the journal: acknowledge nothing yet
            if held_back and not job.owner.held_back(self.manager.identity.peer_id):
                self.on_release()  # our own slots waited for these verdicts to take new subtasks
            answers = {(a.executor, a.replica): a for a in said if a.executor == remote}
            for claim, _ in claims:
                a = answers.get((remote, ReplicaRef(claim.index, claim.replica)))
                acks.append(_ack(claim, a.status, a.reason) if a is not None else _ack(claim, "accepted"))
        return ResultAck(acks=tuple(acks))

    def _problem(self, claim: ResultClaim) -> tuple[str, str] | None:
        if claim.job_id not in self.manager.jobs:
            return "late", "no such running job here"
        return None

    async def renew(self, remote: PeerId, renew: LeaseRenew) -> None:
        job = self.manager.jobs.get(renew.job_id)
        if job is not None:
            await self._drive(job, RenewLeases(remote, _refs(renew.replicas), time.monotonic()))

    async def refused(self, remote: PeerId, refusal: WorkRefused) -> None:
        job = self.manager.jobs.get(refusal.job_id)
        if job is None:
            return
        refs = _refs(refusal.replicas)
        if refusal.reason:  # an empty reason hands them back: this node has idle slots
            fields = {"event": "subtasks_refused_by_peer", "job": job.job_id.hex(), "peer": str(remote),
                      "replicas": len(refs), "reason": refusal.reason}  # fmt: skip
            log.warning("peer %s refused %d replicas of job %s: %s", remote, len(refs), job.job_id.hex()[:12],
                        refusal.reason, extra=fields)  # fmt: skip
            job.refusals[str(remote)] = refusal.reason
        await self._drive(job, ReleaseReplicas(remote, refs, time.monotonic()))
        self.on_release()

    async def transfer(self, remote: PeerId, ask: TransferAsk) -> TransferReply:
        job = self.manager.jobs.get(ask.job_id)
        try:
            to: PeerId | None = PeerId(ask.to)
        except WireError:
            to = None
        if job is None or to is None or job.owner.finished:
            return TransferReply(replicas=(), lease_ms=0)
        now = time.monotonic()
        for moved in (await self.manager.drive(job, TransferReplicas(remote, to, _refs(ask.replicas), now))).transferred:
            if moved.replicas:
                if to == self.manager.identity.peer_id:
                    self.on_release()  # we robbed a thief of our own work: it is queued for our slots
                ids = tuple(ReplicaId(index=r.index, replica=r.replica) for r in moved.replicas)
                return TransferReply(replicas=ids, lease_ms=round((moved.expires - now) * 1000))
        return TransferReply(replicas=(), lease_ms=0)

    async def revoked(self, remote: PeerId, revocation: Revocation) -> None:
        await self.workers.revoked(remote, revocation.job_id, _refs(revocation.replicas), revocation.reason)

    async def credit(self, remote: PeerId, ask: CreditAsk) -> CreditReply:
        if self.crediting is None:
            return CreditReply(receipts=())
        return await self.crediting.answer(remote, ask)

    async def _drive(self, job: RunningJob, event: RenewLeases | ReleaseReplicas) -> None:
        try:
            await self.manager.drive(job, event)
        except JournalError:
            pass  # the job is paused and said why; what it decided waits for the journal


def _subtasks(manager: JobManager, job: RunningJob, refs: tuple[ReplicaRef, ...]) -> list[bytes]:
    """The granted subtasks, encoded: large inputs by hash, each with its Merkle proof."""
    return [wire.encode(s) for s in manager.subtasks(job, refs)]


def _refs(ids: tuple[ReplicaId, ...]) -> tuple[ReplicaRef, ...]:
    return tuple(ReplicaRef(r.index, r.replica) for r in ids)


INLINE_CHECK_BYTES: Final = 64 << 10  # pushed output bytes checked on the event loop itself


def _checked(remote: PeerId, push: ResultPush) -> list[tuple[ResultClaim, Packed | None, tuple[str, str] | None]]:
    """Each pushed claim that decodes, with its output as it came (packed) and what is wrong with it, if anything:
    another executor's, an output that does not inflate, or one that does not match the claim's hash."""
    checked: list[tuple[ResultClaim, Packed | None, tuple[str, str] | None]] = []
    for pushed in push.results:
        try:
            claim = wire.decode(pushed.claim, ResultClaim)
        except WireError as exc:
            log.debug("rejected a pushed claim from %s: %s", remote, exc)
            continue  # not even a job id to answer to
        if claim.executor != remote:
            checked.append((claim, None, ("rejected", f"pushed by {remote} but claimed by {claim.executor}")))
            continue
        try:
            output = plain_output(pushed)
        except WireError as exc:
            checked.append((claim, None, ("rejected", str(exc)[:300])))
            continue
        if claim.status == "ok" and (output is None or hashlib.sha256(output).digest() != claim.output_sha256):
            checked.append((claim, None, ("rejected", "the output does not match the claim's hash")))
            continue
        packed = None if pushed.output is None else Packed(pushed.output, pushed.codec)
        checked.append((claim, packed, None))
    return checked


def _ack(claim: ResultClaim, status: str, reason: str = "") -> ResultAckItem:
    return ResultAckItem(job_id=claim.job_id, index=claim.index, replica=claim.replica, status=status, reason=reason)
