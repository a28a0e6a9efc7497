"""SQLite set up for several processes at once: WAL, a busy timeout, short write transactions, checked at open."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from providers.errors import ConfigurationError

__all__ = ["open_database", "write_transaction"]


def open_database(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path` with `schema`; `what` names it in errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        _check_intact(db, path, what)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")
        with write_transaction(db):
            for statement in filter(None, (part.strip() for part in schema.split(";"))):
                db.execute(statement)
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise _damaged(path, what, str(exc)) from exc
        raise _unopenable(path, what, exc) from exc
    except (OSError, sqlite3.Error) as exc:
        raise _unopenable(path, what, exc) from exc
    return db


def _unopenable(path: Path, what: str, error: Exception) -> ConfigurationError:
    directory = path.parent
    if directory.exists() and not directory.is_dir():
        why = f"{directory} is a file, not a directory"
    elif directory.is_dir() and not os.access(directory, os.W_OK):
        why = f"{directory} is not writable"
    else:
        why = str(error)
    return ConfigurationError(
        f"cannot open the {what} at {path}: {why}; set SIGNAL_HUB_DATA_DIR to a writable directory."
    )


def _check_intact(db: sqlite3.Connection, path: Path, what: str) -> None:
    # A file with an intact header and damaged pages opens fine and fails on every later query:
    # find out now, once, rather than in the middle of a call. quick_check reads every page (~3 s per GB here).
    problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(2)")]
    if problems != ["ok"]:
        db.close()
        raise _damaged(path, what, " ".join(" ".join(problems).replace("*** in database main ***", "").split()))


def _damaged(path: Path, what: str, detail: str) -> ConfigurationError:
    return ConfigurationError(
        f"the {what} at {path} is damaged ({detail}): move it aside with its -wal and -shm files "
        f"(e.g. mv {path} {path}.damaged) and start again; a new, empty one will be made."
    )


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
