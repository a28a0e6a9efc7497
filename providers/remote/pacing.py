"""One pacer for every process that uses the same endpoint and key, kept in SQLite.

```python
pacer = SharedPacer(data_dir / "pacer.sqlite3", "https://api.openai.com/v1", key, tpm=1_000_000)
charged = await pacer.acquire(estimated_tokens)   # the same interface as `RateLimiter`
```

Each process that shares a data directory paces its requests against the same buckets: one row
per endpoint and SHA-256 of the key (never the key) holds the request and token buckets, the
limits the rate-limit headers last reported, any pause a 429 asked for and the learned ratio of
the API's token count to the estimate (every process estimates alike). Every operation loads
that row, applies `RateLimiter`'s own logic and saves it back in one short IMMEDIATE transaction;
waiting happens outside it. A settled request's refund and lesson ride on the transaction of the
headers' update that follows it, so a request costs two transactions when it need not wait.

Turns are kept in a queue table: interactive requests (a few texts) first, then in the order
they asked. A waiter holds its place by a lease it renews while it waits, so a process that dies
holds nothing for more than `lease` seconds.

While no limit is known yet (none configured, none reported), requests go one at a time until a
response's headers tell the limits, so several processes starting at once do not all burst.

When SQLite cannot take its lock (a network filesystem, a database held by something else) or
the file cannot be opened, the process says so once on stderr and paces itself alone.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import anyio

from providers.remote.ratelimit import INTERACTIVE_TOKENS, Clock, RateLimiter, Sleep, WaitQueue

__all__ = ["PACER_FILE", "SharedPacer", "build_limiter", "pacer_scope"]

PACER_FILE = "pacer.sqlite3"
"""The pacer's database, under the data directory."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pacer (
    scope TEXT PRIMARY KEY,
    requests_limit REAL, requests_measured_rate REAL, requests_level REAL,
    tokens_limit REAL, tokens_measured_rate REAL, tokens_level REAL,
    stamp REAL NOT NULL,
    paused_until REAL NOT NULL,
    probe_until REAL NOT NULL,
    estimated_sum REAL NOT NULL,
    used_sum REAL NOT NULL,
    spread REAL NOT NULL,
    pause_left REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pacer_waiters (
    ticket INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    priority INTEGER NOT NULL,
    charge REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pacer_waiters_turn ON pacer_waiters (scope, priority, ticket)
"""
# Probes (requests sent while no limit is known) after which an endpoint that reports none is
# taken to have none: from then on its requests go at full concurrency.
_MAX_PROBES = 3
_PROBE_POLL = 0.02
_T = TypeVar("_T")


def build_limiter(
    rpm: float | None,
    tpm: float | None,
    *,
    window: float = 60.0,
    clock: Clock = time.monotonic,
    sleep: Sleep = anyio.sleep,
    shared_in: Path | None = None,
    endpoint: str = "",
    key: str | Callable[[], str | None] = "",
) -> RateLimiter:
    """The pacer a remote provider needs: shared through `shared_in/pacer.sqlite3`, else its own."""
    if shared_in is None:
        return RateLimiter(rpm, tpm, window=window, clock=clock, sleep=sleep)
    # Processes share one clock: wall time, unless a test injected its own.
    shared_clock = time.time if clock is time.monotonic else clock
    return SharedPacer(shared_in / PACER_FILE, endpoint, key, rpm, tpm, window=window, clock=shared_clock, sleep=sleep)


def pacer_scope(endpoint: str, key: str) -> str:
    """The row a key's pacing lives in: the endpoint and a hash of the key, never the key."""
    return f"{endpoint.rstrip('/')} {hashlib.sha256(key.encode()).hexdigest()[:32]}"


class _SqliteQueue(WaitQueue):
    """The wait queue of one scope, in the pacer's database (used inside its transactions)."""

    def __init__(self, db: sqlite3.Connection, scope: str) -> None:
        super().__init__()
        self._db = db
        self._scope = scope

    def expire(self, now: float, lease: float) -> None:
        self._db.execute(
            "DELETE FROM pacer_waiters WHERE scope = ? AND (expires < ? OR expires > ?)",
            (self._scope, now, now + lease),
        )

    def ahead(self, priority: int, ticket: int | None) -> list[float]:
        rows = self._db.execute(
            "SELECT charge FROM pacer_waiters WHERE scope = ? AND (priority < ? OR (priority = ? AND ticket < ?))",
            (self._scope, priority, priority, sys.maxsize if ticket is None else ticket),
        )
        return [charge for (charge,) in rows]

    def hold(self, ticket: int | None, priority: int, charge: float, expires: float) -> int:
        cursor = self._db.execute(
            "INSERT OR REPLACE INTO pacer_waiters (ticket, scope, priority, charge, expires) VALUES (?, ?, ?, ?, ?)",
            (ticket, self._scope, priority, charge, expires),
        )
        return ticket if ticket is not None else int(cursor.lastrowid or 0)

    def leave(self, ticket: int) -> None:
        self._db.execute("DELETE FROM pacer_waiters WHERE ticket = ?", (ticket,))


class SharedPacer(RateLimiter):
    """A `RateLimiter` whose buckets, learned limits, pauses and queue are shared through SQLite.

    `key` may be a callable returning the key once it is known (None: not yet; the pacer paces
    locally until then). `clock` must be shared by the processes: wall time by default.
    """

    @property
    def _renew_every(self) -> float:  # type: ignore[override]
        return self.lease / 4

    def __init__(
        self,
        path: Path,
        endpoint: str,
        key: str | Callable[[], str | None],
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        window: float = 60.0,
        interactive_tokens: int = INTERACTIVE_TOKENS,
        clock: Clock = time.time,
        sleep: Sleep = anyio.sleep,
        lock_timeout: float = 2.0,
    ) -> None:
        super().__init__(rpm, tpm, window=window, interactive_tokens=interactive_tokens, clock=clock, sleep=sleep)
        self.path = path
        self._endpoint = endpoint
        self._key = key
        self._lock_timeout = lock_timeout
        self._db: sqlite3.Connection | None = None
        self._scope: str | None = None
        self._alone = False  # fell back to pacing this process alone
        self._local_queue = self._queue
        self._probe_until = 0.0
        self._probes = 0
        self._refunds = 0  # tokens settled but not yet given back to the shared bucket
        self._lessons: list[tuple[int, int]] = []  # (estimated, used) not yet taught to the shared ratio

    @property
    def shared(self) -> bool:
        """Whether the pacing is shared right now (False before the key is known or after a fallback)."""
        return self._connection() is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._queue = self._local_queue

    # the shared state

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is not None or self._alone:
            return self._db
        key = self._key() if callable(self._key) else self._key
        if not key:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            # We wait for locks ourselves (`_locked`): SQLite's handler sleeps 1-100 ms at a time.
            self._locked(db, "PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._locked(db, "BEGIN IMMEDIATE")
            try:
                for statement in filter(None, (part.strip() for part in _SCHEMA.split(";"))):
                    db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(pacer)")}
                if "pause_left" not in columns:  # a file of an older release: its pauses are not trusted
                    db.execute("ALTER TABLE pacer ADD COLUMN pause_left REAL NOT NULL DEFAULT 0")
                    db.execute("UPDATE pacer SET paused_until = 0")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except (OSError, sqlite3.Error) as exc:
            self._fall_back(exc)
            return None
        self._db, self._scope = db, pacer_scope(self._endpoint, key)
        self._queue = _SqliteQueue(db, self._scope)
        return db

    def _synced(self, change: Callable[[], _T]) -> _T:
        db = self._connection()
        if db is None:
            return change()
        changed = False
        try:
            self._locked(db, "BEGIN IMMEDIATE")
            try:
                self._load(db)
                result, changed = change(), True
                self._save(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._fall_back(exc)
            if not changed:
                return change()
        return result

    def _locked(self, db: sqlite3.Connection, statement: str) -> None:
        """Run `statement`, trying again every fraction of a millisecond for `lock_timeout` seconds."""
        deadline = time.monotonic() + self._lock_timeout
        pause = 0.0001
        while True:
            try:
                db.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # blocks the loop as SQLite's busy handler would, for less
            pause = min(2 * pause, 0.002)

    def _load(self, db: sqlite3.Connection) -> None:
        row = db.execute(
            "SELECT requests_limit, requests_measured_rate, requests_level,"
            " tokens_limit, tokens_measured_rate, tokens_level,"
            " stamp, paused_until, probe_until, estimated_sum, used_sum, spread, pause_left FROM pacer WHERE scope = ?",
            (self._scope,),
        ).fetchone()
        now = self._clock()
        if row is not None:
            self._requests.load(row[0], row[1], row[2], row[6])
            self._tokens.load(row[3], row[4], row[5], row[6])
            # Another process's clock may run ahead: a pause lasts no longer on ours than the
            # server asked for, and a probe no longer than its lease.
            self._paused_until = min(row[7], now + max(0.0, row[12]))
            self._probe_until = min(row[8], now + self.lease)
            self._estimated_sum, self._used_sum, self._spread = row[9], row[10], row[11]
        # Both buckets are saved with one stamp: bring both to now first.
        self._requests.refill(now)
        self._tokens.refill(now)
        if self._refunds:
            self._tokens.give_back(self._refunds, now)
            self._refunds = 0
        for estimated, used in self._lessons:
            super()._learn(estimated, used)
        self._lessons.clear()

    def _save(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT OR REPLACE INTO pacer (scope, requests_limit, requests_measured_rate, requests_level,"
            " tokens_limit, tokens_measured_rate, tokens_level, stamp, paused_until, probe_until,"
            " estimated_sum, used_sum, spread, pause_left) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._scope,
                *self._requests.state(),
                *self._tokens.state(),
                max(self._requests.stamp, self._tokens.stamp),
                self._paused_until,
                self._probe_until,
                self._estimated_sum,
                self._used_sum,
                self._spread,
                # What is left of the pause, as this process measures it: a reader trusts no more.
                max(0.0, self._paused_until - self._clock()),
            ),
        )

    def _fall_back(self, exc: BaseException) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._alone = True
        self._queue = self._local_queue
        print(
            f"signal-hub: cannot share request pacing through {self.path} ({exc}); "
            "this process paces itself alone, so several processes on one key may meet 429s. "
            "Put SIGNAL_HUB_DATA_DIR on a local disk to share it.",
            file=sys.stderr,
            flush=True,
        )

    # while no limit is known

    def _take_or_queue(self, tokens: int, priority: int, ticket: int | None) -> tuple[float, int | None, int]:
        if not self._probing():
            return super()._take_or_queue(tokens, priority, ticket)
        now = self._clock()
        if self._probe_until > now:  # another request is finding the limits out: wait for its answer
            charge = self.charge_for(tokens)
            ticket = self._queue.hold(ticket, priority, charge, now + self.lease)
            return min(self._probe_until - now, _PROBE_POLL), ticket, charge
        waited, ticket, charge = super()._take_or_queue(tokens, priority, ticket)
        if waited <= 0:
            self._probe_until = now + self.lease
            self._probes += 1
        return waited, ticket, charge

    def _probing(self) -> bool:
        unknown = self._requests.capacity is None and self._tokens.capacity is None
        return unknown and self._db is not None and self._probes < _MAX_PROBES

    def _refund(self, tokens: int) -> None:
        # Given back in the next transaction (the headers' update follows at once): one fewer per request.
        if self._connection() is None:
            super()._refund(tokens)
        else:
            self._refunds += tokens

    def _learn(self, estimated: int, used: int) -> None:
        # Every process estimates alike, so what one learns of the API's count serves all.
        if self._connection() is None:
            super()._learn(estimated, used)
        else:
            self._lessons.append((estimated, used))

    def settle(self, charged: int, estimated: int, used: int | None) -> None:
        super().settle(charged, estimated, used)
        if used is None:  # no answer, so no headers will come: let another request find the limits out
            self._flush()

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        super().update_from_headers(headers)
        self._flush()  # a probe ends after what the headers taught is saved, so the next request knows it

    def _flush(self) -> None:
        """End a probe, and give back what was settled if no transaction has done so yet."""
        if self._probe_until > 0 or self._refunds or self._lessons:

            def answered() -> None:
                self._probe_until = 0.0

            self._synced(answered)
