"""Credit between owners and executors: signing receipts on request, collecting them, the ledger's report.

Theory of operation: an owner grants credit as it journals verdicts (``owning.py``
with ``core/credit.grants``). Receipts are pulled, never pushed: an executor
whose results an owner accepted asks that owner, every ``ASK_EVERY`` seconds for
``ASK_FOR`` seconds after its last accepted push (a verdict can come long after
the claim was accepted: it waits for the other replicas), for the receipts
numbered above the highest it holds (``CreditAsk``). The owner first signs one
receipt per job for the grants to that executor that no receipt covers yet,
journals them, then answers with every receipt above that number. A lost answer
is asked for again; the owner keeps every receipt it signed, so an executor that
lost its own can ask for them all (``after`` = 0). A restarted executor asks every owner it holds
receipts from once more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ..core import wire
from ..core.credit import FUEL_PER_CREDIT, MAX_RECEIPTS, CreditAsk, CreditReply, Grant, batch, credit_of, open_receipt
from ..core.peer_id import PeerId
from ..errors import JournalError, PeerUnavailableError, WireError
from ..storage.credit_ledger import CreditLedger, IssuedReceipt, StoredReceipt
from ..storage.identity import Identity
from ..storage.journal import Store

__all__ = ["ASK_EVERY", "ASK_FOR", "Crediting"]

log = logging.getLogger(__name__)

ASK_EVERY: Final = 2.0  # seconds between asks to an owner that owes receipts
ASK_FOR: Final = 120.0  # ... for this long after the last push it accepted

Ask = Callable[[PeerId, CreditAsk], Awaitable[CreditReply]]  # sends a CreditAsk to an owner


class Crediting:
    """This node's credit, as owner and as executor: see the module docstring.

    Args:
        store: the journal.
        identity: this node's key, which signs its receipts.
    """

    def __init__(self, store: Store, identity: Identity) -> None:
        self.ledger = CreditLedger(store)
        self.identity = identity
        self.ask: Ask | None = None  # set by the node once its job protocol client is up
        self.reachable: Callable[[PeerId], bool] = lambda peer: True
        self._owed: dict[PeerId, float] = {}  # owner -> monotonic time its last accepted push
        self._signing = trio.Lock()  # one batch at a time: a receipt number is never used twice

    # --- owner ---------------------------------------------------------------------------

    async def answer(self, executor: PeerId, ask: CreditAsk) -> CreditReply:
        """Sign receipts for what ``executor`` earned since its last one; the receipts after ``ask.after``."""
        me, them = str(self.identity.peer_id), str(executor)
        async with self._signing:
            try:
                await trio.to_thread.run_sync(self._issue, me, executor)
            except JournalError as exc:  # the grants stay unreceipted: the next ask signs them
                log.warning("credit receipts for %s not signed: %s", executor, exc)
        receipts = await trio.to_thread.run_sync(self.ledger.receipts, me, them, ask.after, MAX_RECEIPTS)
        return CreditReply(receipts=tuple(receipts))

    def _issue(self, me: str, executor: PeerId) -> None:
        rows = self.ledger.unreceipted(str(executor))
        if not rows:
            return
        unreceipted = [Grant(job_id, index, executor, fuel) for job_id, index, fuel in rows]
        drafts = batch(self.identity.peer_id, executor, unreceipted, self.ledger.last_seq(me, str(executor)), _unix_ms())
        issued = [
            IssuedReceipt(d.receipt.seq, d.receipt.job_id, d.indices, d.receipt.results, d.receipt.fuel,
                          wire.sign(d.receipt, self.identity.signing_key))
            for d in drafts
        ]  # fmt: skip
        self.ledger.issue(me, str(executor), issued)

    # --- executor ------------------------------------------------------------------------

    def owed(self, owner: PeerId) -> None:
        """``owner`` accepted results of ours: it will owe receipts once their verdicts are in."""
        if owner != self.identity.peer_id:
            self._owed[owner] = time.monotonic()

    async def run(self) -> None:
        """Ask owners that owe receipts, every ``ASK_EVERY`` seconds, for ``ASK_FOR`` seconds after their last acceptance.

        At start, every owner this node holds receipts from is asked too: verdicts reached while
        this node was down are owed, and nothing else would remind it.
        """
        try:
            known = await trio.to_thread.run_sync(self.ledger.owners, str(self.identity.peer_id))
        except JournalError:
            known = []
        for name in known:
            self.owed(PeerId.from_base58(name))
        while True:
            await trio.sleep(ASK_EVERY)
            now = time.monotonic()
            for owner, since in list(self._owed.items()):
                if now - since > ASK_FOR:
                    del self._owed[owner]
                elif self.reachable(owner):
                    await self.collect(owner)

    async def collect(self, owner: PeerId) -> int:
        """Ask ``owner`` for the receipts after the highest held, until it has no more; how many were new."""
        new = 0
        me = str(self.identity.peer_id)
        while self.ask is not None:
            after = await trio.to_thread.run_sync(self.ledger.last_seq, str(owner), me)
            try:
                reply = await self.ask(owner, CreditAsk(after=after))
                kept = [_stored(envelope, owner, self.identity.peer_id) for envelope in reply.receipts]
                added = await trio.to_thread.run_sync(self.ledger.keep, kept)
            except (PeerUnavailableError, WireError, JournalError) as exc:
                log.debug("credit receipts from %s: %s", owner, exc)
                return new
            new += added
            if len(reply.receipts) < MAX_RECEIPTS or not added:
                return new
        return new

    # --- the report (api.credit_routes.CreditBook) ---------------------------------------

    async def credit_report(self) -> dict[str, Any]:
        """Received (per owner, each receipt as signed) and granted (per executor), in fuel and credit."""
        me = str(self.identity.peer_id)
        received = await trio.to_thread.run_sync(self.ledger.received, me)
        granted = await trio.to_thread.run_sync(self.ledger.granted)
        by_owner: dict[str, dict[str, Any]] = {}
        for r in received:
            o = by_owner.setdefault(r.owner, {"owner": r.owner, "results": 0, "fuel": 0, "receipts": []})
            o["results"] += r.results
            o["fuel"] += r.fuel
            o["receipts"].append({"seq": r.seq, "job_id": r.job_id.hex(), "results": r.results, "fuel": r.fuel,
                                  "credit": credit_of(r.fuel), "receipt": r.envelope.hex()})  # fmt: skip
        for o in by_owner.values():
            o["credit"] = credit_of(o["fuel"])
        total = sum(o["fuel"] for o in by_owner.values())
        return {
            "peer_id": me,
            "fuel_per_credit": FUEL_PER_CREDIT,
            "received": {"fuel": total, "credit": credit_of(total), "owners": list(by_owner.values())},
            "granted": [{"executor": e, "results": n, "fuel": f, "credit": credit_of(f)} for e, n, f in granted],
        }


def _stored(envelope: bytes, owner: PeerId, me: PeerId) -> StoredReceipt:
    """A received receipt, checked: signed by ``owner``, for this node.

    Raises:
        WireError: it is not.
    """
    r = open_receipt(envelope, owner, me)
    return StoredReceipt(str(r.owner), str(r.executor), r.seq, r.job_id, r.results, r.fuel, envelope)


def _unix_ms() -> int:
    return time.time_ns() // 1_000_000
