"""SQLite set up for several processes at once: WAL, a busy timeout, short write transactions, checked at open.

`storage_error(exc, what, path)` says what a failed read or write of one of these databases means
and what to do: a full disk and a lock held too long are passing conditions, retried, never a
reason to move a file aside; only a damaged file is.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from providers.errors import ConfigurationError, StorageError

__all__ = ["BUSY_TIMEOUT_S", "connect", "is_busy", "open_database", "storage_error", "write_transaction"]

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's lock before it fails with "database is locked"."""


_CODES_BY_MESSAGE = {
    "database is locked": sqlite3.SQLITE_BUSY,
    "database table is locked": sqlite3.SQLITE_LOCKED,
    "database or disk is full": sqlite3.SQLITE_FULL,
}
"""SQLite's own messages, for errors that come without their code."""


def open_database(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path` with `schema`; `what` names it in errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(path)
        _check_intact(db, path, what)
        db.execute("PRAGMA journal_mode=WAL")
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


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with the busy timeout, usable from any thread."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return db


def is_busy(exc: BaseException) -> bool:
    """True for "database is locked": another process held a lock longer than the busy timeout."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.Error)
        and code is not None
        and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )


def storage_error(exc: sqlite3.Error, what: str, path: Path | None = None) -> StorageError:
    """`exc`, met reading or writing `what` (at `path`), as an error that says what to do."""
    code = (getattr(exc, "sqlite_errorcode", None) or _CODES_BY_MESSAGE.get(str(exc), 0)) & 0xFF
    where = f"the {what}" + (f" at {path}" if path is not None else "")
    if code == sqlite3.SQLITE_FULL:
        why = f"{where} cannot grow: the disk is full ({exc}). Free some space on it and retry; nothing stored is lost"
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        why = (
            f"{where} stayed locked by another process for over {BUSY_TIMEOUT_S:.0f} s ({exc}). Retry once it "
            "lets go (a sqlite3 shell or a backup holding a transaction open, say); nothing stored is lost"
        )
    elif code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or any(
        sign in str(exc) for sign in ("malformed", "not a database")
    ):
        if path is not None:
            return StorageError(str(_damaged(path, what, str(exc))))
        why = (
            f"{where} is damaged ({exc}): stop the server, move ledger.sqlite3 and cache.sqlite3 out of the data "
            "directory (SIGNAL_HUB_DATA_DIR) and restart"
        )
    elif code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PERM):
        why = f"{where} cannot be written ({exc}). Check that the data directory (SIGNAL_HUB_DATA_DIR) is writable"
    else:
        why = f"{where} failed ({type(exc).__name__}: {exc}). Retry; if it fails again, report it with the server's log"
    return StorageError(why + ".")


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
        db.execute("COMMIT")
    except BaseException:
        # A full disk can end the transaction by itself, and a failed COMMIT leaves it open: roll back
        # what is left, quietly, so the first error is the one raised and the connection stays usable.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
