"""Jobs' state in SQLite under the data directory, shared by every server process.

A job is `queued`, then `running` under a lease, then `done`, `failed` or `cancelled`. A running
job whose owner died (kill -9, a crash) shows as `interrupted`: a process is dead when its lease
ran out, or at once when it lived on this host and its pid is gone. Only one live owner holds a
job's lease, so two processes never run the same job at once.

Every method may block on another process's lock (up to the busy timeout): callers on an event
loop run them in a worker thread. Reads use a connection of their own, so they never queue
behind a write that waits; SQLite failures come out as `StorageError`, saying what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from providers.clients import current_client
from providers.redaction import scrub_column
from providers.storage.sqlite import connect, open_database, storage_error, write_transaction

__all__ = ["JOB_STATUSES", "JobRecord", "JobStatus", "JobStore", "describe_owner"]

JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed", "cancelled", "interrupted")
MAX_ERRORS = 5
"""Errors kept per job: the first ones say what is wrong; more would only fill the answer."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    format TEXT NOT NULL,
    glob TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    space TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL,
    cached INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    dropped_tokens INTEGER NOT NULL DEFAULT 0,
    estimated_tokens INTEGER NOT NULL DEFAULT 0,
    estimated_usd REAL,
    errors TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    engine TEXT NOT NULL DEFAULT 'in-process',
    overwrite INTEGER NOT NULL DEFAULT 0,
    finished REAL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created)
"""
_ADDED_COLUMNS = {
    "engine": "TEXT NOT NULL DEFAULT 'in-process'",
    "overwrite": "INTEGER NOT NULL DEFAULT 0",
    "finished": "REAL",
    "client": "TEXT",
}
"""Columns a store made by an earlier version lacks, added when it is opened."""


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table."""

    id: str
    input: str
    output: str
    format: str
    glob: str
    provider: str
    model: str
    space: str
    fingerprint: str
    status: JobStatus
    done: int
    total: int
    cached: int
    tokens: int
    usd: float
    truncated: int
    dropped_tokens: int
    estimated_tokens: int
    estimated_usd: float | None
    errors: str
    last_error: str | None
    created: float
    updated: float
    started: float | None
    owner: str | None
    lease_until: float
    cancel_requested: int
    engine: str = "in-process"
    """What runs the job: `in-process`, `batch-api` or `ray` (see jobs/engine.py)."""
    client: str | None = None
    """The HTTP client (token name) that started the job: only it sees the job; None for the others."""
    overwrite: int = 0
    """1: the caller let the output replace a job's output already there."""
    finished: float | None = None
    """When its last run ended (None while it runs, or when its process died)."""

    @property
    def error_list(self) -> list[str]:
        return list(json.loads(self.errors))

    def rate_per_min(self, now: float) -> float:
        """Chunks embedded a minute over this run's own running time (chunks a resumed run finds cached are not work).

        A run that ended is measured to its end (for one whose process died: its last progress), so
        the rate of a finished job stays what it was.
        """
        if self.started is None or self.status == "queued":
            return 0.0
        end = now if self.status == "running" else (self.finished or self.updated)
        if end <= self.started:
            return 0.0
        return 60.0 * (self.done - self.cached) / (end - self.started)

    def eta_s(self, now: float) -> float | None:
        rate = self.rate_per_min(now)
        if self.status != "running" or rate <= 0:
            return None
        return 60.0 * (self.total - self.done) / rate


_COLUMNS = [f.name for f in fields(JobRecord)]


def new_owner() -> str:
    """This process, as `host:pid:token` (the token tells a reused pid from the process before it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe_owner(owner: str | None) -> str:
    """An owner (`host:pid:token`) as people say it."""
    if owner is None:
        return "none now"
    host, _, rest = owner.partition(":")
    return f"pid {rest.partition(':')[0]} on {host}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine: only its lease can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """The jobs table; every method is one short transaction, safe across processes."""

    def __init__(
        self, path: Path, *, owner: str | None = None, lease_s: float = 15.0, now: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.owner = owner or new_owner()
        self.lease_s = lease_s
        self._now = now
        self._db = open_database(path, _SCHEMA, "job store")
        self._lock = threading.Lock()
        with write_transaction(self._db):  # a store made by an earlier version gets the new columns
            present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, declaration in _ADDED_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
        # Errors stored before provider messages were made safe may hold a key or a whole error page.
        scrub_column(self._db, "jobs", "last_error")
        scrub_column(self._db, "jobs", "errors", json_list=True)
        self._reader = connect(path)
        self._read_lock = threading.Lock()

    def create(self, **values: Any) -> JobRecord:
        now = self._now()
        row = {
            "id": uuid.uuid4().hex[:12],
            "status": "queued",
            "created": now,
            "updated": now,
            "owner": self.owner,  # a queued job is held too: if this process dies, it shows as interrupted
            "lease_until": now + self.lease_s,
            "client": current_client(),
            **values,
        }
        names = ", ".join(row)
        with self._writing():
            self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        return self._require(row["id"])

    def get(self, job_id: str) -> JobRecord | None:
        with self._reading():
            row = self._reader.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._visible(JobRecord(*row))

    def list(self, limit: int = 20) -> list[JobRecord]:
        """The newest jobs; for an HTTP client, only its own."""
        client = current_client()
        mine = "" if client is None else "WHERE client = ? "
        with self._reading():
            rows = self._reader.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs {mine}ORDER BY created DESC, rowid DESC LIMIT ?",
                (limit,) if client is None else (client, limit),
            ).fetchall()
        return [self._visible(JobRecord(*row)) for row in rows]

    def interrupted(self) -> tuple[JobRecord, ...]:
        """Jobs no live process runs that were not finished: their owner died, or stopped them to exit."""
        with self._reading():
            rows = self._reader.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status IN ('running', 'queued', 'interrupted') "
                "ORDER BY created, rowid"
            ).fetchall()
        return tuple(job for job in (self._visible(JobRecord(*row)) for row in rows) if job.status == "interrupted")

    def wrote_last(self, job: JobRecord) -> bool:
        """Whether `job` ran and no other job writing its output started since: a `.partial` there is its own."""
        with self._reading():
            row = self._reader.execute(
                "SELECT 1 FROM jobs WHERE output = ? AND id != ? AND started >= ? LIMIT 1",
                (job.output, job.id, job.started),
            ).fetchone()
        return job.started is not None and row is None

    def claim(self, job_id: str) -> bool:
        """Take the job's lease and mark it running; False when a live owner already runs it."""
        now = self._now()
        with self._writing():
            row = self._db.execute("SELECT status, owner, lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            status, owner, lease_until = row
            if status in ("running", "queued") and owner != self.owner and self._live(owner, lease_until, now):
                return False
            # A run writes the whole output again (the cache answers what an earlier run did): counts
            # of rows start over; tokens and USD, which were paid, add up over runs.
            self._db.execute(
                "UPDATE jobs SET status = 'running', owner = ?, lease_until = ?, started = ?, finished = NULL, "
                "done = 0, cached = 0, truncated = 0, dropped_tokens = 0, cancel_requested = 0, updated = ? "
                "WHERE id = ?",
                (self.owner, now + self.lease_s, now, now, job_id),
            )
        return True

    def heartbeat(self) -> set[str]:
        """Extend the leases of our queued and running jobs; the ids of ours another process asked to cancel."""
        now = self._now()
        with self._writing():
            self._db.execute(
                "UPDATE jobs SET lease_until = ? WHERE owner = ? AND status IN ('queued', 'running')",
                (now + self.lease_s, self.owner),
            )
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE owner = ? AND status = 'running' AND cancel_requested = 1", (self.owner,)
            ).fetchall()
        return {row[0] for row in rows}

    def progress(self, job_id: str, **counts: int | float) -> None:
        now = self._now()
        sets = ", ".join(f"{name} = ?" for name in counts)
        with self._writing():
            self._db.execute(
                f"UPDATE jobs SET {sets}, updated = ? WHERE id = ? AND owner = ?",
                [*counts.values(), now, job_id, self.owner],
            )

    def add_error(self, job_id: str, message: str) -> None:
        with self._writing():
            self._append_errors(job_id, [message])

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        error: str | None = None,
        *,
        counts: Mapping[str, int | float] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """End our run of the job, in one transaction: its last `counts`, `notes` and `error`; the lease released."""
        now = self._now()
        with self._writing():
            if counts:
                sets = ", ".join(f"{name} = ?" for name in counts)
                self._db.execute(
                    f"UPDATE jobs SET {sets} WHERE id = ? AND owner = ?", [*counts.values(), job_id, self.owner]
                )
            ended = self._db.execute(
                "UPDATE jobs SET status = ?, last_error = COALESCE(?, last_error), owner = NULL, lease_until = 0, "
                "updated = ?, finished = ? WHERE id = ? AND (owner = ? OR owner IS NULL)",
                (status, error, now, now, job_id, self.owner),
            ).rowcount
            if ended:
                self._append_errors(job_id, [*notes, *([error] if error is not None else [])])

    def requeue(self, job_id: str) -> bool:
        """Queue a stopped job again under our lease; False when a live owner still holds it."""
        now = self._now()
        with self._writing():
            row = self._db.execute("SELECT status, owner, lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or (row[0] in ("running", "queued") and self._live(row[1], row[2], now)):
                return False
            self._db.execute(
                "UPDATE jobs SET status = 'queued', owner = ?, lease_until = ?, cancel_requested = 0, updated = ? "
                "WHERE id = ?",
                (self.owner, now + self.lease_s, now, job_id),
            )
        return True

    def request_cancel(self, job_id: str) -> None:
        """Ask whoever runs the job to stop; a queued job, or one whose owner died, is cancelled at once."""
        now = self._now()
        with self._writing():
            self._db.execute("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?", (now, job_id))
            row = self._db.execute("SELECT status, owner, lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
            stopped = row is not None and row[0] == "running" and not self._live(row[1], row[2], now)
            if row is not None and (row[0] == "queued" or stopped):
                self._db.execute(
                    "UPDATE jobs SET status = 'cancelled', owner = NULL, lease_until = 0, finished = ? WHERE id = ?",
                    (now, job_id),
                )

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def _append_errors(self, job_id: str, messages: Sequence[str]) -> None:
        row = self._db.execute("SELECT errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
        errors = json.loads(row[0]) if row else []
        kept = [*errors, *messages][: max(MAX_ERRORS, len(errors))]
        if row is not None and len(kept) > len(errors):
            self._db.execute("UPDATE jobs SET errors = ? WHERE id = ?", (json.dumps(kept), job_id))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        # One connection, used by one thread at a time (callers run methods in worker threads).
        try:
            with self._lock, write_transaction(self._db):
                yield
        except sqlite3.Error as exc:
            raise storage_error(exc, "job store", self.path) from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            with self._read_lock:
                yield
        except sqlite3.Error as exc:
            raise storage_error(exc, "job store", self.path) from exc

    def _require(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        assert record is not None
        return record

    def _live(self, owner: str | None, lease_until: float, now: float) -> bool:
        return owner is not None and lease_until > now and _owner_alive(owner)

    def _visible(self, record: JobRecord) -> JobRecord:
        """A running or queued job whose owner is gone is shown (not stored) as interrupted."""
        if record.status in ("running", "queued") and not self._live(record.owner, record.lease_until, self._now()):
            return replace(record, status="interrupted")
        return record
