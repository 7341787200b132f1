"""The node's journal in SQLite (WAL): what must survive a crash.

Owner side: every job this node owns - its signed manifest, its inputs (the
hash and size of each, and the bytes of the small ones), the Merkle tree over
them, the owner state machine's snapshot of the work in flight, and each
verdict as soon as it is reached - so that a node restarted after a SIGKILL
resumes its unfinished jobs and never recomputes or loses a verdict. A job is
written while its inputs stream in, in bounded transactions (state
``ingesting``); only the last transaction, with the manifest, makes it
``running``, and a job still ``ingesting`` when the node starts is dropped:
its submitter never heard of it.

Executor side: an outbox of signed results waiting for their owner's
acknowledgement, retried across restarts of either side; and a result cache
keyed by (module hash, input hash, engine) that answers a repeated subtask
without running it again. An output is written once: an outbox entry whose
result is cached names the cache row instead of holding a copy.

Outputs are kept packed (``core/output_codec.py``: zstd when it pays, with a
``packed`` column saying how): each is written as the node that ran it packed it,
and unpacked when read. A 256 KiB mandelbrot tile is then 1 to 31 KiB on disk.

Plus other node state, such as the per-peer reputation this node keeps.

Durability: WAL with ``synchronous=NORMAL``. A commit survives the process
being killed at any instant (the WAL is written before the call returns); on
power loss the last transactions may be rolled back, never corrupted. Every
public method is one transaction.

Errors: every SQLite error leaves this module as a ``JournalError`` whose
``kind`` says what happened (a full disk, an I/O error, a damaged file) and
whose message is one line naming the file and what to do. ``open`` refuses a
file it cannot trust before changing anything.

Thread safety: one connection for writes and one for reads, each used from one
thread at a time (a lock guards each), so the node may call in from worker
threads, and a read never waits for a write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2

from ..core import wire
from ..core.output_codec import PLAIN, unpack
from ..errors import JournalError, WireError

__all__ = ["CachedResult", "InputRow", "JobRow", "OutboxEntry", "Store", "VerifiedOutput"]

SCHEMA_VERSION: Final = 7
PAGE_SIZE: Final = 16384  # bytes, for new journals (see _check_and_migrate)
WAL_CHECKPOINT_BYTES: Final = 4 << 20
RESULT_CACHE_BYTES: Final = 1 << 30  # the result cache's outputs, as stored (``cache_trim``) ...
TRIM_TO: Final = 0.9  # ... trimmed to this share of it, so that a trim is not due again at once

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id      BLOB PRIMARY KEY,
    manifest    BLOB NOT NULL,            -- the owner's signed manifest envelope (empty while ingesting)
    state       TEXT NOT NULL,            -- ingesting | running | finished | cancelled
    snapshot    BLOB,                     -- the owner state machine's window, CBOR
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    subtasks    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS inputs (          -- every input of an owned job
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    data        BLOB,                     -- the bytes of a small input (a large one is a blob)
    sha256      BLOB,
    size        INTEGER,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS trees (           -- the Merkle tree over a job's inputs, one row per level
    job_id      BLOB NOT NULL,
    level       INTEGER NOT NULL,
    nodes       BLOB NOT NULL,            -- 32-byte hashes, concatenated
    PRIMARY KEY (job_id, level)
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    status      TEXT NOT NULL,            -- ok | a failure code | disputed
    output      BLOB,                     -- the verified bytes (status ok), packed
    detail      BLOB,                     -- CBOR: executors, candidates, message
    packed      INTEGER NOT NULL DEFAULT 0,  -- how output is packed: 0 plain, 1 zlib, 2 zstd
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS outbox (
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    replica     INTEGER NOT NULL,
    owner       TEXT NOT NULL,            -- the owner's peer ID
    claim       BLOB NOT NULL,            -- our ResultClaim, encoded
    output      BLOB,                     -- NULL when the result cache holds it (the next three columns)
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try    REAL NOT NULL,
    module      BLOB,
    input       BLOB,
    engine      TEXT,
    packed      INTEGER NOT NULL DEFAULT 0,  -- how output is packed: 0 plain, 1 zlib, 2 zstd
    PRIMARY KEY (job_id, idx, replica)
);
CREATE TABLE IF NOT EXISTS result_cache (
    module      BLOB NOT NULL,
    input       BLOB NOT NULL,
    engine      TEXT NOT NULL,
    status      TEXT NOT NULL,
    output      BLOB,
    fuel        INTEGER NOT NULL,
    message     TEXT NOT NULL,
    used        REAL NOT NULL,
    packed      INTEGER NOT NULL DEFAULT 0,  -- how output is packed: 0 plain, 1 zlib, 2 zstd
    PRIMARY KEY (module, input, engine)
);
CREATE TABLE IF NOT EXISTS credit_grants (   -- owner: credit granted for each verified run, with its verdict
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    executor    TEXT NOT NULL,            -- peer ID
    fuel        INTEGER NOT NULL,
    receipt     INTEGER,                  -- the seq of the receipt that covers it (NULL until one is signed)
    PRIMARY KEY (job_id, idx, executor)
);
CREATE INDEX IF NOT EXISTS credit_unreceipted ON credit_grants (executor, receipt);
CREATE TABLE IF NOT EXISTS credit_receipts (  -- signed receipts: those this node issued and those it received
    owner       TEXT NOT NULL,            -- peer IDs
    executor    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    job_id      BLOB NOT NULL,
    results     INTEGER NOT NULL,
    fuel        INTEGER NOT NULL,
    receipt     BLOB NOT NULL,            -- the signed CreditReceipt envelope
    PRIMARY KEY (owner, executor, seq)
);
CREATE TABLE IF NOT EXISTS lone_results (   -- owner: outputs accepted on one trusted executor's word (adaptive)
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    executor    TEXT NOT NULL,            -- peer ID
    state       TEXT NOT NULL,            -- accepted | suspect (its executor was caught lying since) | rechecking
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS lone_by_executor ON lone_results (executor, state);
CREATE INDEX IF NOT EXISTS lone_by_state ON lone_results (job_id, state);
CREATE TABLE IF NOT EXISTS node_state (name TEXT PRIMARY KEY, value BLOB NOT NULL);  -- e.g. reputation
"""


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the journal lists it; ``snapshot`` is read on its own (``Store.snapshot``)."""

    job_id: bytes
    manifest: bytes
    state: str
    created: float
    subtasks: int


@dataclass(frozen=True, slots=True)
class InputRow:
    sha256: bytes
    size: int
    data: bytes | None  # None: a large input, kept as a blob


@dataclass(frozen=True, slots=True)
class VerifiedOutput:
    index: int
    status: str
    output: bytes | None  # plain bytes, unless ``codec`` says it is packed (only ever set on the way in)
    detail: dict[str, Any]
    codec: int = PLAIN
    credit: tuple[tuple[str, int], ...] = ()  # (executor, fuel) granted for this verdict, journalled with it
    alone: str | None = None  # adaptive replication: the one executor whose word it was accepted on
    adaptive: bool = False  # a verdict of an adaptive job: it replaces any lone result of that subtask


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    job_id: bytes
    index: int
    replica: int
    owner: str
    claim: bytes
    output: bytes | None
    attempts: int
    next_try: float
    cached: tuple[bytes, bytes, str] | None = None  # (module, input hash, engine) of a result cache row with the output
    codec: int = PLAIN  # how output is packed (output_codec)


@dataclass(frozen=True, slots=True)
class CachedResult:
    status: str
    output: bytes | None
    fuel: int
    message: str
    codec: int = PLAIN  # how output is packed (output_codec)


class Store:
    """The journal. Open it with ``Store.open(path)``; close it with ``close()`` or a ``with`` block."""

    def __init__(self, connection: sqlite3.Connection, reader: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = threading.Lock()
        # Reads go through a connection of their own: under WAL they never wait for a write
        # (a thief's slot looked its next chunk up in the result cache while the last chunk's
        # outputs were committed, and waited for that commit).
        self._reader = reader
        self._read_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, expected: str | None = None) -> Store:
        """Open (creating if needed) the journal at ``path``, after checking it can be trusted.

        Args:
            expected: why a journal should already be there (e.g. "blobs/ holds the
                files of earlier jobs"), or None. A missing or empty file is then
                an error, not a fresh start: it was lost or truncated.

        Raises:
            JournalError: the file is damaged, missing although ``expected``, or
                was written by a newer meshnode; or it cannot be opened at all.
        """
        if expected is not None and (not path.exists() or path.stat().st_size == 0):
            what = "is empty" if path.exists() else "is missing"
            raise JournalError(
                f"the journal {path} {what}, but {expected}: it was lost or truncated, and starting would forget "
                f"every job it held. Restore it from a backup; or, to start afresh, move the data dir's blobs "
                f"folder aside", "damaged",
            )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The journal holds every job's inputs and outputs: this user's alone. The file is
        # made 0600 before SQLite opens it because SQLite gives its -wal and -shm files
        # the database file's mode; files an older version left readable are narrowed.
        try:
            path.touch(mode=0o600)
            for part in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
                if part.exists() and part.stat().st_mode & 0o077:
                    part.chmod(part.stat().st_mode & 0o700)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except OSError as exc:
            raise JournalError(f"the journal {path} cannot be opened: {exc.strerror or exc}", "io") from None
        except sqlite3.Error as exc:
            raise _journal_error(path, exc) from None
        try:
            _check_and_migrate(db, path)
            with _translated(path, opening=True):
                reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except BaseException:
            db.close()
            raise
        return cls(db, reader, path)

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, _translated(self.path):
            yield self._reader

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # also when COMMIT itself failed (a full disk): SQLite may leave the transaction open
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def probe(self) -> None:
        """Write something small, to learn whether the journal takes writes again.

        Raises:
            JournalError: it does not.
        """
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', ?)", (repr(time.time()),))

    # --- owner: jobs, their inputs, verdicts ----------------------------------------------

    def begin_job(self, job_id: bytes, now: float | None = None) -> None:
        """Start writing a job: it stays ``ingesting`` (and is dropped at the next start) until ``finish_job``."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("INSERT INTO jobs VALUES (?, x'', 'ingesting', NULL, ?, ?, 0)", (job_id, now, now))

    def add_inputs(self, job_id: bytes, rows: Sequence[tuple[int, bytes, int, bytes | None]]) -> None:
        """Journal a batch of a job's inputs: (index, sha256, size, bytes or None for a blob)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO inputs (job_id, idx, sha256, size, data) VALUES (?, ?, ?, ?, ?)",
                [(job_id, i, sha, size, data) for i, sha, size, data in rows],
            )

    def finish_job(
        self, job_id: bytes, manifest: bytes, subtasks: int, levels: Sequence[bytes | bytearray], snapshot: dict[str, Any]
    ) -> None:
        """Make an ingested job real: its manifest, its tree and its first snapshot, in one transaction."""
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO trees VALUES (?, ?, ?)", [(job_id, n, lv) for n, lv in enumerate(levels)])
            db.execute(
                "UPDATE jobs SET manifest = ?, state = 'running', snapshot = ?, subtasks = ?, updated = ? WHERE job_id = ?",
                (manifest, cbor2.dumps(snapshot), subtasks, time.time(), job_id),
            )

    def drop_job(self, job_id: bytes) -> None:
        """Forget a job and everything journalled with it."""
        with self._tx() as db:
            for table in ("jobs", "inputs", "trees", "outputs"):
                db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))

    def drop_ingesting(self) -> list[bytes]:
        """Drop the jobs whose ingestion never finished (the node died while a job came in); their IDs."""
        with self._read() as db:
            ids = [r[0] for r in db.execute("SELECT job_id FROM jobs WHERE state = 'ingesting'")]
        for job_id in ids:
            self.drop_job(job_id)
        return ids

    def save_snapshot(self, job_id: bytes, snapshot: dict[str, Any] | None, state: str = "running") -> None:
        """Save the job's state, and the owner's snapshot unless it is None (then it stays as it was).

        A job that ended (finished, cancelled) stays ended: journal writes run in worker
        threads, and a "running" snapshot that lands after the end must not revive the job.
        """
        only_running = " AND state = 'running'" if state == "running" else ""
        with self._tx() as db:
            if snapshot is None:
                db.execute(f"UPDATE jobs SET state = ?, updated = ? WHERE job_id = ?{only_running}", (state, time.time(), job_id))
            else:
                db.execute(
                    f"UPDATE jobs SET snapshot = ?, state = ?, updated = ? WHERE job_id = ?{only_running}",
                    (cbor2.dumps(snapshot), state, time.time(), job_id),
                )

    def record_outputs(self, job_id: bytes, outputs: Sequence[VerifiedOutput]) -> None:
        """Journal verdicts as they are reached, and the credit they grant (one transaction for the batch).

        A grant is keyed by (job, subtask, executor): a verdict written again grants nothing twice. A revised
        verdict (adaptive replication: the lone executor of the old one was caught lying) withdraws the old
        verdict's grants that no receipt covers yet.
        """
        with self._tx() as db:
            # a verdict that replaces a lone result: credit not yet signed for the old one is withdrawn
            db.executemany("DELETE FROM credit_grants WHERE job_id = ? AND idx = ? AND receipt IS NULL",
                           [(job_id, o.index) for o in outputs if o.detail.get("revised")])  # fmt: skip
            db.executemany(
                "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, o.index, o.status, o.output, cbor2.dumps(o.detail), o.codec) for o in outputs],
            )
            db.executemany(
                "INSERT OR IGNORE INTO credit_grants VALUES (?, ?, ?, ?, NULL)",
                [(job_id, o.index, executor, fuel) for o in outputs for executor, fuel in o.credit],
            )
            if any(o.adaptive for o in outputs):
                db.executemany("INSERT OR REPLACE INTO lone_results VALUES (?, ?, ?, 'accepted')",
                               [(job_id, o.index, o.alone) for o in outputs if o.alone])  # fmt: skip
                db.executemany("DELETE FROM lone_results WHERE job_id = ? AND idx = ?",
                               [(job_id, o.index) for o in outputs if o.adaptive and not o.alone])  # fmt: skip

    # --- lone results (adaptive replication) ------------------------------------------------------

    def distrust(self, executor: str) -> dict[bytes, list[int]]:
        """``executor`` was caught lying: every result accepted on its word alone is suspect. Those, by job."""
        with self._tx() as db:
            db.execute("UPDATE lone_results SET state = 'suspect' WHERE executor = ? AND state = 'accepted'", (executor,))
            rows = db.execute(
                "SELECT job_id, idx FROM lone_results WHERE executor = ? AND state = 'suspect' ORDER BY job_id, idx",
                (executor,),
            ).fetchall()
        found: dict[bytes, list[int]] = {}
        for job_id, index in rows:
            found.setdefault(bytes(job_id), []).append(index)
        return found

    def suspects(self, job_id: bytes) -> dict[str, list[int]]:
        """A job's suspect lone results (their executors were caught lying since), by executor."""
        with self._read() as db:
            rows = db.execute(
                "SELECT executor, idx FROM lone_results WHERE job_id = ? AND state = 'suspect' ORDER BY idx", (job_id,)
            ).fetchall()
        found: dict[str, list[int]] = {}
        for executor, index in rows:
            found.setdefault(executor, []).append(index)
        return found

    def recheck(self, job_id: bytes, indices: Sequence[int]) -> None:
        """These lone results are being decided again: until then, a restarted owner treats them as undecided."""
        with self._tx() as db:
            db.executemany("UPDATE lone_results SET state = 'rechecking' WHERE job_id = ? AND idx = ?",
                           [(job_id, i) for i in indices])  # fmt: skip

    def rechecking(self, job_id: bytes) -> list[int]:
        """The job's lone results being decided again (``recheck``): their next verdicts replace them."""
        with self._read() as db:
            return [r[0] for r in db.execute(
                "SELECT idx FROM lone_results WHERE job_id = ? AND state = 'rechecking' ORDER BY idx", (job_id,))]

    def reopen_job(self, job_id: bytes) -> bool:
        """Make a finished job running again, to decide its rechecked results; False if it is not finished."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state = 'running', updated = ? WHERE job_id = ? AND state = 'finished'", (time.time(), job_id)
            ).rowcount == 1

    def jobs(self, state: str | None = None) -> list[JobRow]:
        """The jobs (all, or those in ``state``), oldest first; those still ingesting are left out."""
        where = "WHERE state = ?" if state else "WHERE state != 'ingesting'"
        with self._read() as db:
            rows = db.execute(
                f"SELECT job_id, manifest, state, created, subtasks FROM jobs {where} ORDER BY created",
                (state,) if state else (),
            ).fetchall()
        return [JobRow(*r) for r in rows]

    def job(self, job_id: bytes) -> JobRow | None:
        with self._read() as db:
            r = db.execute("SELECT job_id, manifest, state, created, subtasks FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if r is None else JobRow(*r)

    def snapshot(self, job_id: bytes) -> dict[str, Any] | None:
        """The job's last saved snapshot.

        Raises:
            JournalError: it is there and cannot be decoded (kind "damaged").
        """
        with self._read() as db:
            row = db.execute("SELECT snapshot FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return _cbor_map(row[0], f"the snapshot of job {job_id.hex()}")

    def tree(self, job_id: bytes, *, leaves: bool = True) -> list[bytes]:
        """The Merkle tree's levels as journalled with the job: leaves first, or (``leaves=False``) the levels above."""
        first = 0 if leaves else 1
        with self._read() as db:
            rows = db.execute(
                "SELECT level, nodes FROM trees WHERE job_id = ? AND level >= ? ORDER BY level", (job_id, first)
            ).fetchall()
        if [r[0] for r in rows] != list(range(first, first + len(rows))):
            raise JournalError(f"the input tree of job {job_id.hex()} is incomplete", "damaged")
        return [bytes(r[1]) for r in rows]

    def input_rows(self, job_id: bytes, indices: Sequence[int]) -> dict[int, InputRow]:
        """The inputs at ``indices`` (read a run of consecutive indices at a time), by index."""
        found: dict[int, InputRow] = {}
        with self._read() as db:
            for lo, hi in _runs(sorted(set(indices))):
                for i, sha, size, data in db.execute(
                    "SELECT idx, sha256, size, data FROM inputs WHERE job_id = ? AND idx BETWEEN ? AND ?", (job_id, lo, hi)
                ):
                    found[i] = InputRow(sha, size, data)
        return found

    def verdicts(self, job_id: bytes, page: int = 65536) -> Iterator[tuple[int, str]]:
        """Every journalled verdict of a job, as (index, status), in index order.

        Read a page at a time (the lock is not held between pages): a million
        verdicts never sit in memory as a list. A lone result being rechecked is not a verdict.
        """
        after = -1
        while True:
            with self._read() as db:
                rows = db.execute(
                    "SELECT idx, status FROM outputs o WHERE job_id = ? AND idx > ? AND NOT EXISTS (SELECT 1 FROM "
                    "lone_results l WHERE l.job_id = o.job_id AND l.idx = o.idx AND l.state = 'rechecking') "
                    "ORDER BY idx LIMIT ?",
                    (job_id, after, page),
                ).fetchall()
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1][0]

    def counts(self, job_id: bytes) -> dict[str, int]:
        """How many journalled verdicts of each status ("ok", "disputed", or a failure code)."""
        with self._read() as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM outputs WHERE job_id = ? GROUP BY status", (job_id,)))

    def output(self, job_id: bytes, index: int) -> VerifiedOutput | None:
        with self._read() as db:
            r = db.execute(
                "SELECT idx, status, output, detail, packed FROM outputs WHERE job_id = ? AND idx = ?", (job_id, index)
            ).fetchone()
        return None if r is None else _verified_output(r)

    def outputs_of(self, job_id: bytes, indices: Sequence[int], max_bytes: int) -> list[VerifiedOutput | None]:
        """The outputs of the first of ``indices`` (None where none is journalled), stopping once they
        add up to ``max_bytes`` (at least one is read)."""
        read: list[VerifiedOutput | None] = []
        size = 0
        for index in indices:
            saved = self.output(job_id, index)
            read.append(saved)
            size += len(saved.output or b"") if saved is not None else 0
            if size >= max_bytes:
                break
        return read

    def output_indices(self, job_id: bytes, skip: int, limit: int) -> list[int]:
        """The indices of a job's journalled outputs, in index order, from the ``skip``-th on."""
        with self._read() as db:
            rows = db.execute(
                "SELECT idx FROM outputs WHERE job_id = ? ORDER BY idx LIMIT ? OFFSET ?", (job_id, limit, skip)
            ).fetchall()
        return [r[0] for r in rows]

    def outputs(self, job_id: bytes) -> list[VerifiedOutput]:
        with self._read() as db:
            rows = db.execute(
                "SELECT idx, status, output, detail, packed FROM outputs WHERE job_id = ? ORDER BY idx", (job_id,)
            ).fetchall()
        return [_verified_output(r) for r in rows]

    # --- executor: outbox and result cache -------------------------------------------------

    def record_runs(self, cached: list[tuple[bytes, bytes, str, CachedResult]], outbox: list[OutboxEntry]) -> None:
        """What an executor keeps after running a batch, in one transaction: the result
        cache entries ``(module, input hash, engine, result)`` and the outbox entries.
        An entry that names a cache row (``OutboxEntry.cached``) is kept without its output:
        outputs can be megabytes, and writing them twice cost the executor a quarter of its time."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO result_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(m, i, e, r.status, r.output, r.fuel, r.message, now, r.codec) for m, i, e, r in cached],
            )
            db.executemany(
                "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.job_id, e.index, e.replica, e.owner, e.claim, None if e.cached else e.output, e.attempts, e.next_try,
                  *(e.cached or (None, None, None)), PLAIN if e.cached else e.codec) for e in outbox],
            )  # fmt: skip

    def outbox_due(self, now: float, limit: int = 256) -> list[OutboxEntry]:
        with self._read() as db:
            rows = db.execute(
                "SELECT o.job_id, o.idx, o.replica, o.owner, o.claim, COALESCE(o.output, c.output), o.attempts, o.next_try, "
                "CASE WHEN o.output IS NULL THEN COALESCE(c.packed, 0) ELSE o.packed END FROM outbox o LEFT JOIN result_cache c ON c.module = o.module AND c.input = o.input AND c.engine = o.engine "
                "WHERE o.next_try <= ? ORDER BY o.next_try LIMIT ?", (now, limit),
            ).fetchall()  # fmt: skip
        return [OutboxEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], codec=r[8]) for r in rows]

    def outbox_retry_later(self, job_id: bytes, index: int, replica: int, next_try: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try = ? WHERE job_id = ? AND idx = ? AND replica = ?",
                (next_try, job_id, index, replica),
            )

    def outbox_ack_many(self, keys: list[tuple[bytes, int, int]]) -> None:
        """Forget acknowledged results: ``(job_id, index, replica)`` each, one transaction."""
        with self._tx() as db:
            db.executemany("DELETE FROM outbox WHERE job_id = ? AND idx = ? AND replica = ?", keys)

    def outbox_size(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def cache_get_many(self, module: bytes, input_sha256s: list[bytes], engine: str) -> dict[bytes, CachedResult]:
        """The cached results among ``input_sha256s``, by input hash."""
        found = {}
        with self._read() as db:
            for digest in set(input_sha256s):
                row = db.execute(
                    "SELECT status, output, fuel, message, packed FROM result_cache "
                    "WHERE module = ? AND input = ? AND engine = ?", (module, digest, engine),
                ).fetchone()  # fmt: skip
                if row is not None:
                    found[digest] = CachedResult(row[0], row[1], row[2], row[3], row[4])
        return found

    def cache_trim(self, max_bytes: int = RESULT_CACHE_BYTES) -> int:
        """Keep the result cache's outputs (as stored, packed) within ``max_bytes``: past it, drop the
        oldest entries down to ``TRIM_TO`` of it, never one an outbox entry still names. How many went.

        A cache answers repeated subtasks; without a bound it grew with every subtask a node ever ran.
        """
        total_sql = "SELECT COALESCE(SUM(length(output)), 0) FROM result_cache"
        with self._read() as db:  # the common case, within bounds, takes no write lock
            if int(db.execute(total_sql).fetchone()[0]) <= max_bytes:
                return 0
        # chosen and deleted in one write transaction: no outbox entry can come to name a row in between
        with self._tx() as db:
            doomed, target = [], int(db.execute(total_sql).fetchone()[0]) - int(max_bytes * TRIM_TO)
            for rowid, size in db.execute(
                "SELECT rowid, COALESCE(length(output), 0) FROM result_cache c WHERE NOT EXISTS ("
                "SELECT 1 FROM outbox o WHERE o.module = c.module AND o.input = c.input AND o.engine = c.engine) "
                "ORDER BY used, rowid"
            ):  # fmt: skip
                if target <= 0:
                    break
                doomed.append((rowid,))
                target -= size
            db.executemany("DELETE FROM result_cache WHERE rowid = ?", doomed)
        return len(doomed)

    def save_state(self, name: str, value: dict[str, Any]) -> None:
        """Keep a plain dict (e.g. ``Reputation.to_dict()``) under ``name``."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO node_state VALUES (?, ?)", (name, cbor2.dumps(value)))

    def load_state(self, name: str) -> dict[str, Any] | None:
        """The dict kept under ``name``, or None.

        Raises:
            JournalError: it is there and cannot be decoded (kind "damaged").
        """
        with self._read() as db:
            row = db.execute("SELECT value FROM node_state WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return _cbor_map(row[0], f"the saved {name}")

    def integrity_ok(self) -> bool:
        with self._read() as db:
            return bool(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def outputs_page(self, job_id: bytes, after: int, limit: int) -> list[VerifiedOutput]:
        """At most ``limit`` of a job's outputs with an index above ``after``, in index order.

        Page through every output with ``after`` = the last index of the previous page
        (-1 for the first): no page holds more than ``limit`` rows in memory.
        """
        with self._read() as db:
            rows = db.execute(
                "SELECT idx, status, output, detail, packed FROM outputs WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [_verified_output(r) for r in rows]


def _verified_output(r: tuple[Any, ...]) -> VerifiedOutput:
    """A row of ``outputs`` (idx, status, output, detail, packed), its output inflated."""
    output = r[2]
    if r[4] and output is not None:
        try:
            output = unpack(output, r[4])
        except WireError as exc:  # it was checked before it was written
            raise JournalError(f"a verified output in the journal is damaged: {exc}", "damaged") from None
    return VerifiedOutput(r[0], r[1], output, cbor2.loads(r[3]) if r[3] else {})


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted indices as runs of consecutive ones, (first, last) each."""
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:  # type: ignore[operator]
            prev = i
        else:
            yield start, prev  # type: ignore[misc]
            start = prev = i
    if start is not None:
        yield start, prev  # type: ignore[misc]


# --- opening, checking, migrating -------------------------------------------------------------


def _check_and_migrate(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a journal that cannot be trusted, then bring its schema up to date."""
    with _translated(path, opening=True):
        # Outputs of hundreds of KiB are the bulk of what is written: with 16 KiB pages a 256 KiB
        # output costs 0.72 ms to commit instead of 1.04 ms, checkpoints included (fewer overflow
        # pages and WAL frames), and the owner of a 2-node mandelbrot job spends a fifth less CPU.
        # Only a new file takes the setting; a journal made with 4 KiB pages keeps them.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # A checkpoint every 4 MiB of WAL, whatever the page size (SQLite counts pages: 1,000 of
        # 16 KiB let the WAL reach 16 MiB, more than a nearly full disk had room for).
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page}")
        # A damaged page anywhere must stop the node now, with one clear line, not
        # fail a write an hour into a job. quick_check reads every page once.
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({problem})")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = SCHEMA_VERSION
        if tables and "meta" not in tables:
            raise JournalError(f"the journal {path} is not a meshnode journal: move it aside, or use another data dir", "damaged")
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = int(row[0]) if row is not None and str(row[0]).isdigit() else 0
        if version < 1:
            raise JournalError(f"the journal {path} is damaged (its schema version is missing or unreadable): "
                               f"move it aside (mv {path} {path}.damaged) to start afresh", "damaged")  # fmt: skip
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {path} was written by a newer meshnode (schema {version}; this one reads up to "
                f"{SCHEMA_VERSION}): run that version, or move the file aside to start afresh", "newer",
            )  # fmt: skip
        db.execute("BEGIN IMMEDIATE")  # one transaction: a migration is all or nothing
        if version == 1:
            _migrate_from_1(db)
        if version <= 2 and "outbox" in tables:
            _migrate_from_2(db)
        if version <= 3:
            _migrate_from_3(db)
        # schema 5 added the credit tables and 6 lone_results, which _create_tables makes: nothing to convert
        if version <= 6 and "outbox" in tables:
            _migrate_from_6(db)
        _create_tables(db)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")


def _create_tables(db: sqlite3.Connection) -> None:
    """The tables that do not exist yet (one statement at a time: executescript would commit first)."""
    for statement in _SCHEMA.split(";"):
        if statement.split("--")[0].strip():
            db.execute(statement)


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 kept every input's hash and size in the owner's snapshot: move them to the inputs table.

    A running job's snapshot becomes an empty window (every undecided subtask runs
    again; executors answer from their result caches), and its tree is rebuilt.
    """
    from ..core.merkle import leaf_hash, tree_levels  # only a migration needs them here
    from ..core.owner import DEFAULT_MAX_OPEN, DEFAULT_MAX_PENDING_BYTES

    db.execute("ALTER TABLE inputs RENAME TO inputs_1")  # its data column was NOT NULL: large inputs now have rows
    _create_tables(db)
    db.execute("INSERT INTO inputs (job_id, idx, data) SELECT job_id, idx, data FROM inputs_1")
    db.execute("DROP TABLE inputs_1")
    db.execute("ALTER TABLE jobs ADD COLUMN subtasks INTEGER NOT NULL DEFAULT 0")
    for job_id, blob in db.execute("SELECT job_id, snapshot FROM jobs").fetchall():
        try:
            old = cbor2.loads(blob)
            digests = [bytes.fromhex(d) for d in old["inputs"]]
            sizes = [int(n) for n in old["sizes"]]
            o = old["owner"]
        except Exception:  # noqa: BLE001 - a damaged row is quarantined when the node resumes it
            continue
        db.executemany(
            "INSERT INTO inputs (job_id, idx, data, sha256, size) VALUES (?, ?, NULL, ?, ?) "
            "ON CONFLICT (job_id, idx) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size",
            [(job_id, i, d, n) for i, (d, n) in enumerate(zip(digests, sizes, strict=True))],
        )
        levels = tree_levels(b"".join(leaf_hash(d, n) for d, n in zip(digests, sizes, strict=True)))
        db.executemany("INSERT OR REPLACE INTO trees VALUES (?, ?, ?)", [(job_id, n, lv) for n, lv in enumerate(levels)])
        window = {
            "format": 2, "job_id": o["job_id"], "owner": o["owner"], "replication": o["replication"],
            "subtask_count": o["subtask_count"], "lease_seconds": o["lease_seconds"], "max_attempts": o["max_attempts"],
            "max_open": DEFAULT_MAX_OPEN, "max_pending_bytes": DEFAULT_MAX_PENDING_BYTES, "cursor": 0,
            "requests": o["requests"], "open": [],
        }  # fmt: skip
        db.execute("UPDATE jobs SET snapshot = ?, subtasks = ? WHERE job_id = ?", (cbor2.dumps(window), len(sizes), job_id))


def _migrate_from_2(db: sqlite3.Connection) -> None:
    """Schema 2's outbox held a copy of every output; schema 3's may name a result cache row instead."""
    for column in ("module BLOB", "input BLOB", "engine TEXT"):
        db.execute(f"ALTER TABLE outbox ADD COLUMN {column}")


def _migrate_from_3(db: sqlite3.Connection) -> None:
    """Schema 3 kept every output plain; schema 4 says of each whether it is packed (all of 3's are not)."""
    for table in ("outputs", "outbox", "result_cache"):
        columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}  # none: the table is made anew
        if columns and "packed" not in columns:  # an earlier migration may have made it afresh
            db.execute(f"ALTER TABLE {table} ADD COLUMN packed INTEGER NOT NULL DEFAULT 0")


def _migrate_from_6(db: sqlite3.Connection) -> None:
    """Schema 6's outbox held each claim signed (an envelope); schema 7's holds the claim itself, as pushed now.
    A row whose envelope does not open goes: no owner could ever have taken it."""
    for job_id, idx, replica, claim in db.execute("SELECT job_id, idx, replica, claim FROM outbox").fetchall():
        key = (job_id, idx, replica)
        try:
            body = wire.decode(claim, wire.Signed).body
        except WireError:
            db.execute("DELETE FROM outbox WHERE job_id = ? AND idx = ? AND replica = ?", key)
            continue
        db.execute("UPDATE outbox SET claim = ? WHERE job_id = ? AND idx = ? AND replica = ?", (body, *key))


# --- errors ---------------------------------------------------------------------------------


@contextmanager
def _translated(path: Path, *, opening: bool = False) -> Iterator[None]:
    """SQLite's errors as ``JournalError``s, one line each, saying what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _journal_error(path, exc, opening=opening) from None


def _journal_error(path: Path, exc: sqlite3.Error, *, opening: bool = False) -> JournalError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    detail = str(exc).splitlines()[0] if str(exc) else name
    if name.startswith("SQLITE_FULL"):
        return JournalError(f"the journal {path} cannot grow: the disk is full ({_free(path)}); free some space", "full")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in detail or "not a database" in detail:
        remedy = (
            f"move it aside (mv {path} {path}.damaged) to start afresh, losing the jobs it held, or restore it from a backup"
        )
        return JournalError(f"the journal {path} is damaged ({detail}): {remedy}", "damaged")
    what = "cannot be opened" if opening else "failed"
    return JournalError(f"the journal {path} {what}: {detail}", "io")


def _free(path: Path) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return "free space unknown"
    return f"{free / (1 << 20):.1f} MiB free on {_mount_point(path.parent)}"


def _mount_point(path: Path) -> str:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def _cbor_map(blob: bytes, what: str) -> dict[str, Any]:
    """``blob`` decoded as a CBOR map.

    Raises:
        JournalError: it is not one (kind "damaged"); the message starts with ``what``.
    """
    try:
        value = cbor2.loads(blob)
    except Exception as exc:  # cbor2 raises several types for garbage; all mean the same here
        raise JournalError(f"{what} is unreadable: {exc}", "damaged") from None
    if not isinstance(value, dict):
        raise JournalError(f"{what} is not a map", "damaged")
    return value
