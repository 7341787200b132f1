"""Receipts between an owner and an executor over a fake link: signed once, kept once, a lost answer asked again."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.core.credit import CreditAsk, CreditReply, open_receipt
from meshnode.core.peer_id import PeerId
from meshnode.errors import PeerUnavailableError
from meshnode.node.crediting import Crediting
from meshnode.storage.credit_ledger import CreditLedger
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



# A run of the pull under random events: verdicts granting credit, asks whose answers may be lost, and
# either side restarting (its journal reopened). However they interleave, each grant ends up in exactly
# one receipt, the executor never holds one twice, and one last ask brings it everything granted.
EVENTS = st.lists(st.one_of(
    st.tuples(st.just("verdict"), st.integers(0, 1), st.integers(1, 10**12)),
    st.tuples(st.just("ask"), st.booleans()),
    st.tuples(st.just("restart"), st.sampled_from(["owner", "executor"])),
), max_size=12)  # fmt: skip


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EVENTS)
def test_any_interleaving_grants_once_and_loses_nothing(tmp_path: Path, events: list[tuple[object, ...]]) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    owner_key, executor_key = load_or_create_identity(root / "o"), load_or_create_identity(root / "e")
    stores = {"owner": Store.open(root / "o.db"), "executor": Store.open(root / "e.db")}
    granted, index = 0, 0

    def sides() -> tuple[Crediting, Crediting, Link]:
        owner, executor = Crediting(stores["owner"], owner_key), Crediting(stores["executor"], executor_key)
        link = Link(owner, executor_key.peer_id)
        executor.ask = link
        return owner, executor, link

    async def run() -> None:
        nonlocal granted, index
        owner, executor, link = sides()
        for event in events:
            match event:
                case ("verdict", job, fuel):
                    grant(stores["owner"], JOBS[int(job)], index, executor_key.peer_id, int(fuel))  # type: ignore[call-overload]
                    granted, index = granted + int(fuel), index + 1  # type: ignore[call-overload]
                case ("ask", lost):
                    link.lose = int(bool(lost))
                    await executor.collect(owner_key.peer_id)
                case ("restart", side):
                    stores[str(side)].close()
                    stores[str(side)] = Store.open(root / ("o.db" if side == "owner" else "e.db"))
                    owner, executor, link = sides()
        await executor.collect(owner_key.peer_id)
        report = await executor.credit_report()
        assert report["received"]["fuel"] == granted
        seqs = [r["seq"] for o in report["received"]["owners"] for r in o["receipts"]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert sum(r["results"] for o in report["received"]["owners"] for r in o["receipts"]) == index
        assert CreditLedger(stores["owner"]).unreceipted(str(executor_key.peer_id)) == []

    try:
        trio.run(run)
    finally:
        for store in stores.values():
            store.close()
