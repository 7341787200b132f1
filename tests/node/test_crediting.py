"""Receipts between an owner and an executor over a fake link: signed once, kept once, a lost answer asked again."""

from __future__ import annotations

from pathlib import Path

from meshnode.core.credit import CreditAsk, CreditReply, open_receipt
from meshnode.core.peer_id import PeerId
from meshnode.errors import PeerUnavailableError
from meshnode.node.crediting import Crediting
from meshnode.storage.identity import load_or_create_identity
from meshnode.storage.journal import Store, VerifiedOutput

JOBS = [b"J" * 16, b"K" * 16]


class Link:
    """The executor's asks, answered by the owner's ``Crediting``; ``lose`` drops the next answers."""

    def __init__(self, owner: Crediting, executor: PeerId) -> None:
        self.owner = owner
        self.executor = executor  # who the owner hears asking (the stream's authenticated peer)
        self.lose = 0
        self.asks: list[int] = []

    async def __call__(self, to: PeerId, ask: CreditAsk) -> CreditReply:
        assert to == self.owner.identity.peer_id
        self.asks.append(ask.after)
        reply = await self.owner.answer(self.executor, ask)
        if self.lose:
            self.lose -= 1
            raise PeerUnavailableError("the answer was lost")
        return reply


def grant(store: Store, job_id: bytes, index: int, executor: PeerId, fuel: int) -> None:
    store.record_outputs(job_id, [VerifiedOutput(index, "ok", b"x", {}, credit=((str(executor), fuel),))])


async def test_receipts_are_signed_once_kept_once_and_a_lost_answer_is_asked_again(tmp_path: Path) -> None:
    owner_key, executor_key = load_or_create_identity(tmp_path / "o"), load_or_create_identity(tmp_path / "e")
    executor_id = executor_key.peer_id
    with Store.open(tmp_path / "o.db") as owner_store, Store.open(tmp_path / "e.db") as executor_store:
        owner = Crediting(owner_store, owner_key)
        executor = Crediting(executor_store, executor_key)
        link = Link(owner, executor_id)
        executor.ask = link
        grant(owner_store, JOBS[0], 0, executor_id, 10)
        grant(owner_store, JOBS[1], 0, executor_id, 5)

        link.lose = 1  # the owner signs two receipts, and its answer never arrives
        assert await executor.collect(owner_key.peer_id) == 0
        assert await executor.collect(owner_key.peer_id) == 2  # asked again from 0: both come
        grant(owner_store, JOBS[0], 1, executor_id, 7)
        assert await executor.collect(owner_key.peer_id) == 1
        assert await executor.collect(owner_key.peer_id) == 0  # nothing new: nothing signed twice
        assert link.asks == [0, 0, 2, 3]

        report = await executor.credit_report()
        (from_owner,) = report["received"]["owners"]
        assert from_owner["owner"] == str(owner_key.peer_id) and from_owner["fuel"] == 22 and from_owner["results"] == 3
        receipts = [open_receipt(bytes.fromhex(r["receipt"]), owner_key.peer_id, executor_id) for r in from_owner["receipts"]]
        assert [(r.seq, r.job_id, r.results, r.fuel) for r in receipts] == [(1, JOBS[0], 1, 10), (2, JOBS[1], 1, 5), (3, JOBS[0], 1, 7)]
        granted = (await owner.credit_report())["granted"]
        assert granted == [{"executor": str(executor_id), "results": 3, "fuel": 22, "credit": 22e-9}]


async def test_receipts_for_another_executor_are_refused(tmp_path: Path) -> None:
    owner_key, executor_key = load_or_create_identity(tmp_path / "o"), load_or_create_identity(tmp_path / "e")
    other = load_or_create_identity(tmp_path / "x").peer_id
    with Store.open(tmp_path / "o.db") as owner_store, Store.open(tmp_path / "e.db") as executor_store:
        owner = Crediting(owner_store, owner_key)
        executor = Crediting(executor_store, executor_key)
        executor.ask = Link(owner, other)  # the owner answers with receipts for someone else
        grant(owner_store, JOBS[0], 0, other, 10)
        assert await executor.collect(owner_key.peer_id) == 0
        assert (await executor.credit_report())["received"]["owners"] == []

