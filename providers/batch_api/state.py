"""The durable state of Batch API jobs: SQLite under the data directory, written before each remote step.

A job's work list (the cache keys of the texts it sends, fixed when it is planned), its requests
(one row per `custom_id`, their status and tries) and its batches. A batch row is written with
its input file id *before* the batch is created and gets the batch id right after, so a process
killed at any point finds, when run again, every batch it may have created and never creates
one twice (`BatchApiEngine` looks an unrecorded one up by its input file). A request's `tokens`
are our count when it was planned; `billed` what its answer reported. Stored errors are scrubbed
of keys at open (`redaction.scrub_column`), for state written before messages were made safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from providers.redaction import scrub_column
from providers.storage.sqlite import open_database, write_transaction

__all__ = ["BatchRow", "BatchState", "JobRow", "RequestRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    space TEXT NOT NULL,
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    created REAL NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS work (
    job_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    key BLOB NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
    job_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    batch TEXT,
    error TEXT,
    PRIMARY KEY (job_id, custom_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    batch_id TEXT,
    status TEXT NOT NULL DEFAULT 'submitting',
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    reservation_id TEXT,
    reserved_usd REAL NOT NULL DEFAULT 0,
    reserved_at REAL NOT NULL DEFAULT 0,
    reserved_by TEXT,
    collected INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_job ON batches (job_id)
"""

PENDING, SENT, DONE, FAILED = "pending", "sent", "done", "failed"


@dataclass(frozen=True)
class JobRow:
    job_id: str
    space: str
    model: str
    dimensions: int
    cancelled: bool


@dataclass(frozen=True)
class RequestRow:
    custom_id: str
    start: int
    stop: int
    tokens: int
    status: str
    tries: int
    batch: str | None
    error: str | None
    billed: int | None = None
    """Tokens its answer reported (None until it is answered)."""


@dataclass(frozen=True)
class BatchRow:
    id: str
    input_file_id: str
    batch_id: str | None
    status: str
    total: int
    completed: int
    failed: int
    reservation_id: str | None
    reserved_usd: float
    reserved_at: float
    reserved_by: str | None
    """The engine (process) that holds the reservation."""
    collected: bool


class BatchState:
    """Jobs, requests and batches of the Batch API engine, shared safely by several processes."""

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA, "Batch API job state")
        with write_transaction(self._db):
            if "billed" not in {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}:
                self._db.execute("ALTER TABLE requests ADD COLUMN billed INTEGER")
        scrub_column(self._db, "requests", "error", keys=("job_id", "custom_id"))

    # jobs

    def job(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, space, model, dimensions, cancelled FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else JobRow(row[0], row[1], row[2], row[3], bool(row[4]))

    def create_job(
        self,
        job: JobRow,
        keys: Sequence[bytes],
        dropped: dict[int, int],
        requests: Sequence[tuple[str, int, int, int]],
    ) -> None:
        """Record a planned job: its work list (cache keys, tokens cut from over-long texts) and its
        requests as (custom_id, start, stop, tokens)."""
        with self._lock, write_transaction(self._db):
            self._db.execute(
                "INSERT INTO jobs (job_id, space, model, dimensions, created) VALUES (?, ?, ?, ?, ?)",
                (job.job_id, job.space, job.model, job.dimensions, self._now()),
            )
            self._db.executemany(
                "INSERT INTO work (job_id, position, key, dropped) VALUES (?, ?, ?, ?)",
                ((job.job_id, position, key, dropped.get(position, 0)) for position, key in enumerate(keys)),
            )
            self._db.executemany(
                "INSERT INTO requests (job_id, custom_id, start, stop, tokens) VALUES (?, ?, ?, ?, ?)",
                ((job.job_id, *request) for request in requests),
            )

    def work(self, job_id: str) -> list[bytes]:
        with self._lock:
            rows = self._db.execute("SELECT key FROM work WHERE job_id = ? ORDER BY position", (job_id,))
            return [bytes(key) for (key,) in rows]

    def dropped(self, job_id: str) -> dict[int, int]:
        """Work-list position → tokens cut from that over-long text."""
        with self._lock:
            rows = self._db.execute("SELECT position, dropped FROM work WHERE job_id = ? AND dropped > 0", (job_id,))
            return dict(rows.fetchall())

    def mark_cancelled(self, job_id: str) -> None:
        with self._lock, write_transaction(self._db):
            self._db.execute("UPDATE jobs SET cancelled = 1 WHERE job_id = ?", (job_id,))

    def reopen(self, job_id: str) -> int:
        """Undo a cancel and make every request that failed for good pending again, tries anew; returns how many."""
        with self._lock, write_transaction(self._db):
            self._db.execute("UPDATE jobs SET cancelled = 0 WHERE job_id = ?", (job_id,))
            return self._db.execute(
                "UPDATE requests SET status = ?, tries = 0, error = NULL WHERE job_id = ? AND status = ?",
                (PENDING, job_id, FAILED),
            ).rowcount

    # requests

    def requests(self, job_id: str) -> list[RequestRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT custom_id, start, stop, tokens, status, tries, batch, error, billed FROM requests "
                "WHERE job_id = ? ORDER BY start",
                (job_id,),
            ).fetchall()
        return [RequestRow(*row) for row in rows]

    def set_requests(self, job_id: str, custom_ids: Sequence[str], status: str, error: str | None = None) -> None:
        with self._lock, write_transaction(self._db):
            self._db.executemany(
                "UPDATE requests SET status = ?, error = ? WHERE job_id = ? AND custom_id = ?",
                ((status, error, job_id, request_id) for request_id in custom_ids),
            )

    # batches

    def batches(self, job_id: str) -> list[BatchRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, input_file_id, batch_id, status, total, completed, failed, reservation_id, "
                "reserved_usd, reserved_at, reserved_by, collected FROM batches WHERE job_id = ? ORDER BY created, id",
                (job_id,),
            ).fetchall()
        return [
            BatchRow(*row[:11], collected=bool(row[11]))  # type: ignore[misc]
            for row in rows
        ]

    def add_batch(
        self,
        job_id: str,
        row_id: str,
        input_file_id: str,
        custom_ids: Sequence[str],
        reservation: tuple[str, float, str] | None,
    ) -> None:
        """Record a batch about to be created, and its requests as sent, in one transaction.

        `reservation` is the budget held for it: (reservation id, USD, owner).
        """
        reservation_id, reserved, owner = reservation or (None, 0.0, None)
        now = self._now()
        with self._lock, write_transaction(self._db):
            self._db.execute(
                "INSERT INTO batches (id, job_id, input_file_id, total, reservation_id, reserved_usd, reserved_at, "
                "reserved_by, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row_id, job_id, input_file_id, len(custom_ids), reservation_id, reserved, now, owner, now),
            )
            self._db.executemany(
                "UPDATE requests SET status = ?, batch = ?, tries = tries + 1 WHERE job_id = ? AND custom_id = ?",
                ((SENT, row_id, job_id, request_id) for request_id in custom_ids),
            )

    def renew_reservation(self, row_id: str, reservation_id: str, owner: str) -> None:
        with self._lock, write_transaction(self._db):
            self._db.execute(
                "UPDATE batches SET reservation_id = ?, reserved_at = ?, reserved_by = ? WHERE id = ?",
                (reservation_id, self._now(), owner, row_id),
            )

    def now(self) -> float:
        return self._now()

    def set_batch_id(self, row_id: str, batch_id: str) -> None:
        with self._lock, write_transaction(self._db):
            self._db.execute("UPDATE batches SET batch_id = ?, status = 'validating' WHERE id = ?", (batch_id, row_id))

    def update_batch(self, row_id: str, status: str, counts: tuple[int, int, int]) -> None:
        with self._lock, write_transaction(self._db):
            self._db.execute(
                "UPDATE batches SET status = ?, total = ?, completed = ?, failed = ? WHERE id = ?",
                (status, *counts, row_id),
            )

    def finish_batch(
        self, row_id: str, outcomes: dict[str, tuple[str, str | None]], billed: dict[str, int] | None = None
    ) -> None:
        """Mark a batch collected and set each of its requests' outcome (status, error) and billed tokens, in one
        transaction."""
        billed = billed or {}
        with self._lock, write_transaction(self._db):
            self._db.executemany(
                "UPDATE requests SET status = ?, error = ?, billed = COALESCE(?, billed) "
                "WHERE batch = ? AND custom_id = ?",
                (
                    (status, error, billed.get(request_id), row_id, request_id)
                    for request_id, (status, error) in outcomes.items()
                ),
            )
            self._db.execute("UPDATE batches SET collected = 1 WHERE id = ?", (row_id,))

    def batch_requests(self, row_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT custom_id FROM requests WHERE batch = ? ORDER BY start", (row_id,))
            return [request_id for (request_id,) in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
