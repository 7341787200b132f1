"""The node's journal in SQLite (WAL): what must survive a crash.

Owner side: every job this node owns (its signed manifest, the job's state as
the owner state machine snapshots it, and each verified output as soon as it
is accepted), so that a node restarted after a SIGKILL resumes its unfinished
jobs and never recomputes or loses a verified output.

Executor side: an outbox of signed results waiting for their owner's
acknowledgement, retried across restarts of either side; and a result cache
keyed by (module hash, input hash, engine) that answers a repeated subtask
without running it again.

Plus other node state, such as the per-peer reputation this node keeps.

Durability: WAL with ``synchronous=NORMAL``. A commit survives the process
being killed at any instant (the WAL is written before the call returns); on
power loss the last transactions may be rolled back, never corrupted. Writes
are small and batched per call; every public method is one transaction.

Thread safety: one connection, used from one thread at a time (a lock guards
it), so the node may call in from worker threads for large outputs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2

__all__ = ["CachedResult", "OutboxEntry", "OwnedJob", "Store", "VerifiedOutput"]

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id      BLOB PRIMARY KEY,
    manifest    BLOB NOT NULL,            -- the owner's signed manifest envelope
    state       TEXT NOT NULL,            -- running | finished | cancelled
    snapshot    BLOB,                     -- the owner state machine, CBOR
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inputs (          -- an owned job's small inputs (large ones are blobs)
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    status      TEXT NOT NULL,            -- ok | a failure code | disputed
    output      BLOB,                     -- the verified bytes (status ok)
    detail      BLOB,                     -- CBOR: executors, candidates, message
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS outbox (
    job_id      BLOB NOT NULL,
    idx         INTEGER NOT NULL,
    replica     INTEGER NOT NULL,
    owner       TEXT NOT NULL,            -- the owner's peer ID
    claim       BLOB NOT NULL,            -- our signed ResultClaim envelope
    output      BLOB,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try    REAL NOT NULL,
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
    PRIMARY KEY (module, input, engine)
);
CREATE TABLE IF NOT EXISTS node_state (name TEXT PRIMARY KEY, value BLOB NOT NULL);  -- e.g. reputation
"""


@dataclass(frozen=True, slots=True)
class OwnedJob:
    job_id: bytes
    manifest: bytes
    state: str
    snapshot: dict[str, Any] | None
    created: float


@dataclass(frozen=True, slots=True)
class VerifiedOutput:
    index: int
    status: str
    output: bytes | None
    detail: dict[str, Any]


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


@dataclass(frozen=True, slots=True)
class CachedResult:
    status: str
    output: bytes | None
    fuel: int
    message: str


class Store:
    """The journal. Open it with ``Store.open(path)``; close it with ``close()`` or a ``with`` block."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) the journal at ``path``.

        Raises:
            sqlite3.DatabaseError: the file is not a database, or was written by a newer version.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            db.close()
            raise sqlite3.DatabaseError(f"{path} was written by a newer meshnode (schema {row[0]})")
        return cls(db, path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- owner: jobs and verified outputs ------------------------------------------------

    def add_job(
        self, job_id: bytes, manifest: bytes, snapshot: dict[str, Any], now: float | None = None,
        inputs: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        """Journal a new job and its small ``inputs`` (index, bytes), in one transaction."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?)", [(job_id, i, d) for i, d in inputs])
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, 'running', ?, ?, ?)",
                (job_id, manifest, cbor2.dumps(snapshot), now, now),
            )

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

    def record_outputs(self, job_id: bytes, outputs: list[VerifiedOutput]) -> None:
        """Journal verdicts as they are reached (one transaction for the batch)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?)",
                [(job_id, o.index, o.status, o.output, cbor2.dumps(o.detail)) for o in outputs],
            )

    def jobs(self, state: str | None = None) -> list[OwnedJob]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id, manifest, state, snapshot, created FROM jobs"
                + (" WHERE state = ?" if state else "")
                + " ORDER BY created",
                (state,) if state else (),
            ).fetchall()
        return [OwnedJob(r[0], r[1], r[2], cbor2.loads(r[3]) if r[3] else None, r[4]) for r in rows]

    def inputs(self, job_id: bytes, indices: list[int]) -> dict[int, bytes]:
        """The small inputs journalled with a job, by index (the ones not found are left out)."""
        with self._lock:
            found = {}
            for i in indices:
                row = self._db.execute("SELECT data FROM inputs WHERE job_id = ? AND idx = ?", (job_id, i)).fetchone()
                if row is not None:
                    found[i] = row[0]
        return found

    def output(self, job_id: bytes, index: int) -> VerifiedOutput | None:
        with self._lock:
            r = self._db.execute(
                "SELECT idx, status, output, detail FROM outputs WHERE job_id = ? AND idx = ?", (job_id, index)
            ).fetchone()
        return None if r is None else VerifiedOutput(r[0], r[1], r[2], cbor2.loads(r[3]) if r[3] else {})

    def outputs(self, job_id: bytes) -> list[VerifiedOutput]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, status, output, detail FROM outputs WHERE job_id = ? ORDER BY idx", (job_id,)
            ).fetchall()
        return [VerifiedOutput(r[0], r[1], r[2], cbor2.loads(r[3]) if r[3] else {}) for r in rows]

    # --- executor: outbox and result cache -------------------------------------------------

    def record_runs(self, cached: list[tuple[bytes, bytes, str, CachedResult]], outbox: list[OutboxEntry]) -> None:
        """What an executor keeps after running a batch, in one transaction: the result
        cache entries ``(module, input hash, engine, result)`` and the outbox entries."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO result_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(m, i, e, r.status, r.output, r.fuel, r.message, now) for m, i, e, r in cached],
            )
            db.executemany(
                "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.job_id, e.index, e.replica, e.owner, e.claim, e.output, e.attempts, e.next_try) for e in outbox],
            )

    def outbox_due(self, now: float, limit: int = 256) -> list[OutboxEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE next_try <= ? ORDER BY next_try LIMIT ?", (now, limit)
            ).fetchall()
        return [OutboxEntry(*r) for r in rows]

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
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def cache_get_many(self, module: bytes, input_sha256s: list[bytes], engine: str) -> dict[bytes, CachedResult]:
        """The cached results among ``input_sha256s``, by input hash."""
        with self._lock:
            found = {}
            for digest in set(input_sha256s):
                row = self._db.execute(
                    "SELECT status, output, fuel, message FROM result_cache WHERE module = ? AND input = ? AND engine = ?",
                    (module, digest, engine),
                ).fetchone()
                if row is not None:
                    found[digest] = CachedResult(*row)
        return found

    def save_state(self, name: str, value: dict[str, Any]) -> None:
        """Keep a plain dict (e.g. ``Reputation.to_dict()``) under ``name``."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO node_state VALUES (?, ?)", (name, cbor2.dumps(value)))

    def load_state(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM node_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(cbor2.loads(row[0]))

    def integrity_ok(self) -> bool:
        with self._lock:
            return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def outputs_page(self, job_id: bytes, after: int, limit: int) -> list[VerifiedOutput]:
        """At most ``limit`` of a job's outputs with an index above ``after``, in index order.

        Page through every output with ``after`` = the last index of the previous page
        (-1 for the first): no page holds more than ``limit`` rows in memory.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, status, output, detail FROM outputs WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [VerifiedOutput(r[0], r[1], r[2], cbor2.loads(r[3]) if r[3] else {}) for r in rows]
