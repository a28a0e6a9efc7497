"""A persistent record of every embedding call and what it cost, shared by all server processes.

SQLite in WAL mode with a busy timeout, one short `BEGIN IMMEDIATE` transaction per write, so
several processes can record at once without "database is locked". Budget reservations live in
the same database, so a hard limit holds across concurrent calls and processes alike. Each
reservation names its owner, a ledger that holds an OS file lock while it is open: the lock goes
when the process dies, however it dies, and the next ledger to start releases what it held.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import filelock

from providers.base import EmbeddingResult
from providers.clients import NO_CLIENT, current_client
from providers.cost import CostReport, Usage
from providers.errors import BudgetExceededError, ConfigurationError
from providers.settings import Budget
from providers.storage.sqlite import open_database, write_transaction

__all__ = ["CostLedger", "Reservation"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    session TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    embeddings INTEGER NOT NULL,
    usd REAL,
    cached INTEGER NOT NULL DEFAULT 0,
    saved_usd REAL NOT NULL DEFAULT 0,
    estimated_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_at ON calls (at);
CREATE INDEX IF NOT EXISTS calls_session ON calls (session);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    usd REAL NOT NULL
);
"""

# Tokens one row records at most: SQLite integers (and their sums) end at 2**63. A server reporting
# more has been refused as implausible already; this only keeps its record from failing.
_MAX_TOKENS = 10**15
# A reservation without an owner (written before owners were recorded) is ignored after this long.
_RESERVATION_TTL_S = 3600.0
# A lock file this old whose lock is free belongs to a ledger that died: its owner had time to lock it.
_STALE_LOCK_FILE_S = 60.0


@dataclass(frozen=True)
class Reservation:
    id: str
    usd: float
    warning: str | None = None


class CostLedger:
    """Records calls in `path` and answers totals by session, since a date, or of all time."""

    def __init__(self, path: Path, *, session: str | None = None, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.session = session or uuid.uuid4().hex
        self._now = now
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA, "cost ledger")
        with self._lock, write_transaction(self._db):
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(reservations)")}
            if "owner" not in columns:
                self._db.execute("ALTER TABLE reservations ADD COLUMN owner TEXT")
            calls = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
            if "estimated_tokens" not in calls:  # a ledger from before servers without usage reports
                self._db.execute("ALTER TABLE calls ADD COLUMN estimated_tokens INTEGER NOT NULL DEFAULT 0")
            # The client (HTTP token name) of each call and reservation; NULL before clients were recorded.
            if "client" not in calls:
                self._db.execute("ALTER TABLE calls ADD COLUMN client TEXT")
            if "client" not in columns:
                self._db.execute("ALTER TABLE reservations ADD COLUMN client TEXT")
        self._owners = path.with_name(path.name + ".owners")
        self._owner = _LiveOwner(self._owners)
        self.release_dead_owners()

    def record(self, result: EmbeddingResult, *, cached: int = 0, saved_usd: float = 0.0) -> None:
        """Record one call (one transaction)."""
        with self._lock, write_transaction(self._db):
            self._insert(result, cached, saved_usd)

    def reserve(self, usd: float, budget: Budget) -> Reservation:
        """Set `usd` aside against the hard limit, or raise `BudgetExceededError` before anything is spent."""
        try:
            return self._reserve(usd, budget)
        except BudgetExceededError:
            if not self.release_dead_owners():  # a process that died since we started may hold some
                raise
            return self._reserve(usd, budget)

    def release_dead_owners(self) -> int:
        """Release the reservations of ledgers whose process is gone; returns how many were released."""
        with self._lock:
            owners = [
                owner
                for (owner,) in self._db.execute(
                    "SELECT DISTINCT owner FROM reservations WHERE owner IS NOT NULL AND owner != ?", (self._owner.id,)
                )
            ]
        dead = [owner for owner in owners if not _LiveOwner.is_alive(self._owners, owner)]
        released = 0
        if dead:
            with self._lock, write_transaction(self._db):
                marks = ",".join("?" * len(dead))
                released = self._db.execute(f"DELETE FROM reservations WHERE owner IN ({marks})", dead).rowcount
        _LiveOwner.remove_stale(self._owners, keep=self._owner.id, now=time.time())
        return released

    def _reserve(self, usd: float, budget: Budget) -> Reservation:
        reservation_id = uuid.uuid4().hex
        with self._lock, write_transaction(self._db):
            spent = self._spent(budget.period)
            held = self._held()
            projected = spent + held + usd
            if budget.hard_usd is not None and usd > 0 and projected > budget.hard_usd:
                raise BudgetExceededError(
                    f"this call would cost about ${usd:.6f}, and ${spent:.6f} is spent this {budget.period} "
                    f"(${held:.6f} more is reserved by calls in flight): that passes the hard limit of "
                    f"${budget.hard_usd:.6f}. Raise SIGNAL_HUB_BUDGET_HARD_USD, wait for the next {budget.period}, "
                    "or use the local provider (free)."
                )
            client = current_client()
            if budget.hard_usd_per_client is not None and client is not None and usd > 0:
                mine = self._spent(budget.period, client) + self._held(client)
                if mine + usd > budget.hard_usd_per_client:
                    raise BudgetExceededError(
                        f"this call would cost about ${usd:.6f}, and client {client!r} has spent or reserved "
                        f"${mine:.6f} this {budget.period}: that passes the per-client hard limit of "
                        f"${budget.hard_usd_per_client:.6f}. Raise SIGNAL_HUB_BUDGET_HARD_USD_PER_CLIENT, wait for "
                        f"the next {budget.period}, or use the local provider (free)."
                    )
            self._db.execute(
                "INSERT INTO reservations (id, at, usd, owner, client) VALUES (?, ?, ?, ?, ?)",
                (reservation_id, self._now(), usd, self._owner.id, client),
            )
        warning = None
        if budget.soft_usd is not None and projected > budget.soft_usd:
            warning = (
                f"spend this {budget.period} is ${projected:.6f} with this call, past the soft limit of "
                f"${budget.soft_usd:.6f}."
            )
        return Reservation(reservation_id, usd, warning)

    def settle(
        self,
        reservation: Reservation,
        result: EmbeddingResult,
        *,
        cached: int = 0,
        saved_usd: float = 0.0,
        embeddings: int | None = None,
    ) -> None:
        """Replace a reservation by the call's reported cost, in one transaction.

        `embeddings` (default: the result's count) leaves out those `record_part` recorded already.
        """
        with self._lock, write_transaction(self._db):
            self._db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            self._insert(result, cached, saved_usd, embeddings)

    def record_part(self, reservation: Reservation, part: EmbeddingResult) -> None:
        """Record one completed request of a call in flight, and take its cost off the call's reservation."""
        with self._lock, write_transaction(self._db):
            self._db.execute(
                "UPDATE reservations SET usd = MAX(0, usd - ?) WHERE id = ?", (part.cost_usd or 0.0, reservation.id)
            )
            self._insert(part, 0, 0.0)

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed before spending."""
        with self._lock, write_transaction(self._db):
            self._db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))

    def report(self, *, session: str | None = None, since: datetime | None = None) -> CostReport:
        """Totals of one session, or since a moment, or (neither) of all time."""
        where: list[str] = []
        args: list[object] = []
        if session is not None:
            where.append("session = ?")
            args.append(session)
        if since is not None:
            where.append("at >= ?")
            args.append(since.timestamp())
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT provider, model, client, SUM(tokens), SUM(requests), SUM(embeddings), "
                "SUM(COALESCE(usd, 0)), SUM(CASE WHEN usd IS NULL THEN tokens ELSE 0 END), "
                f"SUM(cached), SUM(saved_usd), SUM(estimated_tokens) FROM calls {clause} "
                "GROUP BY provider, model, client",
                args,
            ).fetchall()
        report = CostReport(total_usd=0.0, total=Usage())
        for provider, model, client, *sums in rows:
            usage = Usage(*sums)
            for bucket in (
                report.total,
                report.by_provider.setdefault(provider, Usage()),
                report.by_model.setdefault(model, Usage()),
                report.by_client.setdefault(client or NO_CLIENT, Usage()),
            ):
                bucket.merge(usage)
        report.total_usd = report.total.usd
        return report

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error), write_transaction(self._db):
                self._db.execute("DELETE FROM reservations WHERE owner = ?", (self._owner.id,))
            self._db.close()
            self._owner.release()

    def _insert(self, result: EmbeddingResult, cached: int, saved_usd: float, embeddings: int | None = None) -> None:
        tokens = min(result.tokens, _MAX_TOKENS)
        self._db.execute(
            "INSERT INTO calls (at, session, provider, model, tokens, requests, embeddings, usd, cached, saved_usd, "
            "estimated_tokens, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._now(),
                self.session,
                result.provider,
                result.model,
                tokens,
                result.requests,
                result.count if embeddings is None else embeddings,
                result.cost_usd,
                cached,
                saved_usd,
                tokens if result.tokens_estimated else 0,
                current_client(),
            ),
        )

    def _spent(self, period: str, client: str | None = None) -> float:
        """Spent in the period; with `client`, by that client only."""
        mine = "" if client is None else " AND client = ?"
        who = () if client is None else (client,)
        if period == "session":
            row = self._db.execute(
                f"SELECT SUM(COALESCE(usd, 0)) FROM calls WHERE session = ?{mine}", (self.session, *who)
            )
        else:
            row = self._db.execute(
                f"SELECT SUM(COALESCE(usd, 0)) FROM calls WHERE at >= ?{mine}",
                (_period_start(period, self._now()), *who),
            )
        return float(row.fetchone()[0] or 0.0)

    def _held(self, client: str | None = None) -> float:
        mine = "" if client is None else " AND client = ?"
        row = self._db.execute(
            f"SELECT SUM(usd) FROM reservations WHERE (owner IS NOT NULL OR at >= ?){mine}",
            (self._now() - _RESERVATION_TTL_S, *(() if client is None else (client,))),
        )
        return float(row.fetchone()[0] or 0.0)


class _LiveOwner:
    """One open ledger, alive exactly while it holds the OS lock on `<id>.lock` (released by the OS at death)."""

    def __init__(self, directory: Path) -> None:
        self.id = uuid.uuid4().hex
        self._path = directory / f"{self.id}.lock"
        self._lock = filelock.FileLock(self._path, thread_local=False)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=10)  # a fresh name: only a sweeper's brief probe can be in the way
        except (OSError, filelock.Timeout) as exc:
            raise ConfigurationError(
                f"cannot lock {self._path} for the cost ledger: {exc}; set SIGNAL_HUB_DATA_DIR to a writable directory."
            ) from exc

    def release(self) -> None:
        self._lock.release()
        self._path.unlink(missing_ok=True)

    @staticmethod
    def is_alive(directory: Path, owner: str) -> bool:
        path = directory / f"{owner}.lock"
        if not path.exists():
            return False
        probe = filelock.FileLock(path, thread_local=False)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            return True
        probe.release()
        path.unlink(missing_ok=True)
        return False

    @staticmethod
    def remove_stale(directory: Path, *, keep: str, now: float) -> None:
        """Lock files of ledgers that died holding no reservation."""
        for path in directory.glob("*.lock"):
            with contextlib.suppress(OSError):
                if path.stem != keep and now - path.stat().st_mtime > _STALE_LOCK_FILE_S:
                    _LiveOwner.is_alive(directory, path.stem)


def _period_start(period: str, now: float) -> float:
    if period == "all":
        return 0.0
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today if period == "day" else today.replace(day=1)
    return start.timestamp()
