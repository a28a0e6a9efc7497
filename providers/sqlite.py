"""SQLite set up for several processes at once: WAL, a busy timeout, short write transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["open_database", "write_transaction"]


def open_database(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path` with `schema`; `what` names it in errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")
        with write_transaction(db):
            for statement in filter(None, (part.strip() for part in schema.split(";"))):
                db.execute(statement)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(f"cannot open the {what} at {path}: {exc}; check SIGNAL_HUB_DATA_DIR.") from exc
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so two readers turning writers cannot deadlock.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
