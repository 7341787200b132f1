"""The journal on real SQLite: everything comes back after a reopen, and after a SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nacl.signing
import pytest

from meshnode.core import wire
from meshnode.core.merkle import MerkleTree, leaf_hash, tree_levels
from meshnode.core.output_codec import PLAIN, ZLIB, ZSTD, pack
from meshnode.core.peer_id import PeerId
from meshnode.core.result import ResultClaim
from meshnode.errors import JournalError
from meshnode.storage.journal import PAGE_SIZE, CachedResult, InputRow, OutboxEntry, Store, VerifiedOutput
from tests.modes import mode_of


def add_job(store: Store, job_id: bytes = b"J" * 16, inputs: list[bytes] | None = None, snapshot: dict[str, object] | None = None) -> None:
    """A job as ``JobManager.create`` journals it: begun, its inputs, then its manifest, tree and snapshot."""
    inputs = [b"zero", b"one"] if inputs is None else inputs
    store.begin_job(job_id, now=100.0)
    store.add_inputs(job_id, [(i, hashlib.sha256(d).digest(), len(d), d) for i, d in enumerate(inputs)])
    leaves = b"".join(leaf_hash(hashlib.sha256(d).digest(), len(d)) for d in inputs)
    store.finish_job(job_id, b"signed manifest", len(inputs), tree_levels(leaves), snapshot or {"n": 0})


def test_jobs_outputs_and_snapshots_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with Store.open(path) as store:
        add_job(store, snapshot={"format": 2, "open": [1, 2]})
        store.record_outputs(b"J" * 16, [
            VerifiedOutput(0, "ok", b"\x00out", {"executors": ["a", "b"]}),
            VerifiedOutput(1, "trap", None, {"message": "unreachable"}),
        ])  # fmt: skip
        store.save_snapshot(b"J" * 16, {"format": 2, "open": [3]})
        store.save_state("reputation", {"format": 1, "peers": {"p": {"agreements": 3}}})
    with Store.open(path) as store:
        (job,) = store.jobs("running")
        assert (job.job_id, job.manifest, job.subtasks) == (b"J" * 16, b"signed manifest", 2)
        assert store.snapshot(job.job_id) == {"format": 2, "open": [3]}
        assert [(o.index, o.status, o.output) for o in store.outputs(b"J" * 16)] == [(0, "ok", b"\x00out"), (1, "trap", None)]
        assert store.outputs(b"J" * 16)[0].detail == {"executors": ["a", "b"]}
        assert sorted(store.verdicts(b"J" * 16)) == [(0, "ok"), (1, "trap")]
        assert store.counts(b"J" * 16) == {"ok": 1, "trap": 1}
        assert store.load_state("reputation") == {"format": 1, "peers": {"p": {"agreements": 3}}}
        store.save_snapshot(b"J" * 16, {}, state="finished")
        assert store.jobs("running") == [] and len(store.jobs("finished")) == 1
        assert store.integrity_ok()


def test_an_ended_job_is_not_revived_by_a_running_snapshot_that_lands_late(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        add_job(store, snapshot={"n": 1})
        store.save_snapshot(b"J" * 16, None, "cancelled")
        store.save_snapshot(b"J" * 16, {"n": 2}, "running")
        (job,) = store.jobs()
        assert job.state == "cancelled" and store.snapshot(job.job_id) == {"n": 1}


def test_a_jobs_inputs_and_tree_are_journalled_with_it(tmp_path: Path) -> None:
    inputs = [b"zero", b"one", b"two", b"three", b"four"]
    with Store.open(tmp_path / "node.db") as store:
        add_job(store, inputs=inputs)
        store.add_inputs(b"J" * 16, [(7, b"h" * 32, 5 << 20, None)])  # a large input: a blob, not a row of bytes
    with Store.open(tmp_path / "node.db") as store:
        rows = store.input_rows(b"J" * 16, [4, 0, 1, 3, 7, 9])  # three runs, one index absent
        assert {i: r.data for i, r in rows.items()} == {0: b"zero", 1: b"one", 3: b"three", 4: b"four", 7: None}
        assert rows[7] == InputRow(b"h" * 32, 5 << 20, None) and rows[1].sha256 == hashlib.sha256(b"one").digest()
        assert store.input_rows(b"K" * 16, [0]) == {}
        tree = MerkleTree.from_levels(store.tree(b"J" * 16))
        assert tree.root == MerkleTree([leaf_hash(hashlib.sha256(d).digest(), len(d)) for d in inputs]).root


def test_a_job_whose_ingestion_never_finished_is_dropped_and_never_listed(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(b"I" * 16)
        store.add_inputs(b"I" * 16, [(0, b"h" * 32, 1, b"x")])
        add_job(store)
        assert [j.job_id for j in store.jobs()] == [b"J" * 16]
    with Store.open(tmp_path / "node.db") as store:
        assert store.drop_ingesting() == [b"I" * 16]
        assert store.input_rows(b"I" * 16, [0]) == {} and [j.job_id for j in store.jobs()] == [b"J" * 16]


def test_outbox_retries_and_acks(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        entry = OutboxEntry(b"J" * 16, 3, 1, "12D3KooWowner", b"claim", b"output", 0, next_try=10.0)
        store.record_runs([], [entry])
        assert store.outbox_due(now=5.0) == []
        assert store.outbox_due(now=10.0) == [entry]
        store.outbox_retry_later(b"J" * 16, 3, 1, next_try=20.0)
        assert store.outbox_due(now=15.0) == []
        (again,) = store.outbox_due(now=20.0)
        assert again.attempts == 1
        store.outbox_ack_many([(b"J" * 16, 3, 1), (b"K" * 16, 0, 0)])  # an unknown key is no error
        assert store.outbox_size() == 0


def test_result_cache_is_keyed_by_module_input_and_engine(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        result = CachedResult("ok", b"42", 1234, "")
        store.record_runs([(b"m" * 32, b"i" * 32, "wasmtime-50/x86_64", result)], [])
        assert store.cache_get_many(b"m" * 32, [b"i" * 32, b"x" * 32], "wasmtime-50/x86_64") == {b"i" * 32: result}
        assert store.cache_get_many(b"m" * 32, [b"i" * 32], "wasmtime-50/aarch64") == {}
        assert store.cache_get_many(b"n" * 32, [b"i" * 32], "wasmtime-50/x86_64") == {}


def test_a_file_that_is_not_a_database_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Exception, match="not a database|file is not a database"):
        Store.open(path)


WRITER = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from meshnode.storage.journal import Store, VerifiedOutput
store = Store.open(Path(sys.argv[1]))
store.begin_job(b"J" * 16)
i = 0
while True:
    store.record_outputs(b"J" * 16, [VerifiedOutput(i, "ok", bytes([i % 256]) * 1000, {})])
    print(i, flush=True)   # printed only after the commit returned
    i += 1
"""


def test_every_committed_output_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        committed = -1
        deadline = time.monotonic() + 30
        while committed < 200 and time.monotonic() < deadline:
            committed = int(writer.stdout.readline())
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    with Store.open(path) as store:
        assert store.integrity_ok()
        indexes = [o.index for o in store.outputs(b"J" * 16)]
        assert indexes[: committed + 1] == list(range(committed + 1))  # nothing acknowledged was lost
        assert all(o.output == bytes([o.index % 256]) * 1000 for o in store.outputs(b"J" * 16))


@pytest.mark.usefixtures("permissive_umask")
def test_the_journal_and_its_wal_are_private_to_this_user(tmp_path: Path) -> None:
    path = tmp_path / "new" / "node.db"
    with Store.open(path) as store:
        add_job(store)  # a write, so the -wal and -shm files exist
        assert mode_of(path.parent) == 0o700
        assert {p.name: mode_of(p) for p in path.parent.iterdir()} == {
            "node.db": 0o600, "node.db-wal": 0o600, "node.db-shm": 0o600,
        }  # fmt: skip


@pytest.mark.usefixtures("permissive_umask")
def test_a_journal_readable_by_others_is_narrowed_at_open(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with Store.open(path) as store:
        add_job(store)
    for p in tmp_path.iterdir():
        p.chmod(0o644)
    with Store.open(path) as store:
        add_job(store, b"K" * 16)
        assert {mode_of(p) for p in tmp_path.iterdir()} == {0o600}
        assert len(store.jobs()) == 2


def test_an_outbox_entry_naming_a_cache_row_is_kept_once_and_read_back_whole(tmp_path: Path) -> None:
    key = (b"m" * 32, b"i" * 32, "wasmtime-50/x86_64")
    with Store.open(tmp_path / "node.db") as store:
        entry = OutboxEntry(b"J" * 16, 0, 0, "12D3KooWowner", b"claim", b"big output", 0, next_try=1.0, cached=key)
        store.record_runs([(*key, CachedResult("ok", b"big output", 7, ""))], [entry])
        (due,) = store.outbox_due(now=1.0)
        assert due.output == b"big output"
        with store._read() as db:  # one copy of the output, in the cache
            assert db.execute("SELECT output FROM outbox").fetchall() == [(None,)]


def test_a_schema_2_outbox_is_migrated_and_keeps_its_entries(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        with store._tx() as db:  # the outbox as schema 2 had it, with one entry
            db.execute("DROP TABLE outbox")
            db.execute("CREATE TABLE outbox (job_id BLOB NOT NULL, idx INTEGER NOT NULL, replica INTEGER NOT NULL, "
                       "owner TEXT NOT NULL, claim BLOB NOT NULL, output BLOB, attempts INTEGER NOT NULL DEFAULT 0, "
                       "next_try REAL NOT NULL, PRIMARY KEY (job_id, idx, replica))")  # fmt: skip
            db.execute("INSERT INTO outbox VALUES (?, 1, 0, 'o', ?, 'out', 0, 1.0)", (b"J" * 16, signed_claim()[0]))
            db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    with Store.open(tmp_path / "node.db") as store:
        (due,) = store.outbox_due(now=1.0)
        assert (due.index, due.output) == (1, "out")
        entry = OutboxEntry(b"J" * 16, 2, 0, "o", b"c", b"x", 0, next_try=1.0, cached=(b"m", b"i", "e"))
        store.record_runs([], [entry])  # the new columns are there
        assert store.outbox_size() == 2


def signed_claim() -> tuple[bytes, bytes]:
    """A claim as schema 6 kept it in the outbox (signed), and as schema 7 keeps it (encoded)."""
    key = nacl.signing.SigningKey.generate()
    claim = ResultClaim(job_id=b"J" * 16, index=1, replica=0, executor=PeerId.from_public_key(bytes(key.verify_key)),
                        status="ok", output_sha256=bytes(32), output_size=3, fuel_used=7, engine="e", message="")
    return wire.sign(claim, key), wire.encode(claim)


def test_a_schema_6_outbox_keeps_its_claims_unwrapped_from_their_signatures(tmp_path: Path) -> None:
    envelope, claim = signed_claim()
    with Store.open(tmp_path / "node.db") as store:
        entries = [OutboxEntry(b"J" * 16, i, 0, "o", data, b"out", 0, next_try=1.0)
                   for i, data in enumerate([envelope, b"not an envelope"])]  # fmt: skip
        store.record_runs([], entries)
        with store._tx() as db:  # schema 6 kept each claim signed
            db.execute("UPDATE meta SET value = '6' WHERE key = 'schema'")
    with Store.open(tmp_path / "node.db") as store:
        (due,) = store.outbox_due(now=1.0)  # the damaged one went: no owner could have taken it
        assert (due.index, due.claim, due.output) == (0, claim, b"out")


def test_a_new_journal_has_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    import sqlite3

    with Store.open(tmp_path / "new.db") as store, store._read() as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.close()
    with Store.open(tmp_path / "old.db") as store, store._read() as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_outputs_are_kept_packed_and_read_back_plain(tmp_path: Path) -> None:
    tile = bytes(range(256)) * 1024  # compresses a hundredfold
    packed = pack(tile)
    assert packed.codec == ZSTD
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(b"J" * 16)
        store.record_outputs(b"J" * 16, [VerifiedOutput(0, "ok", packed.data, {}, codec=ZSTD),
                                         VerifiedOutput(1, "ok", b"plain", {})])  # fmt: skip
        store.record_runs([(b"m", b"i", "e", CachedResult("ok", packed.data, 7, "", codec=ZSTD))],
                          [OutboxEntry(b"J" * 16, 0, 0, "o", b"c", None, 0, next_try=1.0, cached=(b"m", b"i", "e"))])  # fmt: skip
    with Store.open(tmp_path / "node.db") as store:
        assert [o.output for o in store.outputs(b"J" * 16)] == [tile, b"plain"]
        assert store.output(b"J" * 16, 0) == VerifiedOutput(0, "ok", tile, {})
        with store._read() as db:  # on disk, the tile takes what zstd made of it
            assert db.execute("SELECT length(output) FROM outputs WHERE idx = 0").fetchone()[0] == len(packed.data)
        (due,) = store.outbox_due(now=1.0)  # pushed as it is kept: no second compression
        assert (due.output, due.codec) == (packed.data, ZSTD)
        assert store.cache_get_many(b"m", [b"i"], "e")[b"i"] == CachedResult("ok", packed.data, 7, "", codec=ZSTD)


def test_outputs_an_earlier_version_packed_with_zlib_are_read_back_plain(tmp_path: Path) -> None:
    tile = bytes(range(256)) * 1024
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(b"J" * 16)
        store.record_outputs(b"J" * 16, [VerifiedOutput(0, "ok", zlib.compress(tile, 1), {}, codec=ZLIB)])
        assert store.output(b"J" * 16, 0) == VerifiedOutput(0, "ok", tile, {})


def test_a_damaged_packed_output_is_a_journal_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(b"J" * 16)
        store.record_outputs(b"J" * 16, [VerifiedOutput(0, "ok", b"not zstd", {}, codec=ZSTD)])
        with pytest.raises(JournalError, match="damaged") as caught:
            store.outputs(b"J" * 16)
        assert caught.value.kind == "damaged"


def test_a_schema_3_journal_is_migrated_and_its_outputs_read_as_plain(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.begin_job(b"J" * 16)
        store.record_outputs(b"J" * 16, [VerifiedOutput(0, "ok", b"old output", {})])
        with store._tx() as db:  # schema 3 had no packed columns
            for table in ("outputs", "outbox", "result_cache"):
                db.execute(f"ALTER TABLE {table} DROP COLUMN packed")
            db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    with Store.open(tmp_path / "node.db") as store:
        assert [o.output for o in store.outputs(b"J" * 16)] == [b"old output"]
        store.record_runs([(b"m", b"i", "e", CachedResult("ok", b"x", 1, ""))], [])  # the new columns are there
        assert store.cache_get_many(b"m", [b"i"], "e")[b"i"].codec == PLAIN


def test_a_read_does_not_wait_for_a_write_under_way(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store, ThreadPoolExecutor(1) as pool:
        add_job(store)
        with store._tx() as db:  # a write under way in this thread: a large commit, say
            db.execute("INSERT INTO node_state VALUES ('x', x'00')")
            read = pool.submit(store.jobs)
            assert [j.job_id for j in read.result(timeout=60)] == [b"J" * 16]


def test_the_result_cache_is_trimmed_oldest_first_and_never_loses_what_the_outbox_names(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        for i in range(10):  # 10 entries of 1,000 bytes, written in this order
            store.record_runs([(b"m", b"i%d" % i, "e", CachedResult("ok", bytes([i]) * 1000, 1, ""))], [])
        # the oldest entry is still to be pushed: its outbox entry names it
        store.record_runs([], [OutboxEntry(b"J" * 16, 0, 0, "o", b"c", None, 0, next_try=1.0, cached=(b"m", b"i0", "e"))])
        assert store.cache_trim(max_bytes=20_000) == 0  # within the bound: nothing goes
        assert store.cache_trim(max_bytes=5_000) == 6  # down to 4,500 bytes: six of the nine it may drop
        kept = store.cache_get_many(b"m", [b"i%d" % i for i in range(10)], "e")
        assert sorted(kept) == [b"i0", b"i7", b"i8", b"i9"]
        (due,) = store.outbox_due(now=1.0)
        assert due.output == bytes([0]) * 1000
