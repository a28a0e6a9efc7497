"""A persistent, content-addressed cache of vectors, keyed by the vector space and the text.

The key is sha256(space id, text): provider, model, dimensions and normalisation are part of it,
so a vector made by another model can never come back. Vectors are float32 blobs in SQLite (WAL,
busy timeout), shared safely by several processes.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from providers.errors import ConfigurationError
from providers.storage.sqlite import is_busy, open_database, storage_error, write_transaction

__all__ = ["CacheStats", "CachedVector", "EmbeddingCache", "cache_key"]

# A rowid table, not WITHOUT ROWID: there a row may hold only ~1 KB of a 4 KB page in place, so
# every 1.5 KB vector of 384 floats went to an overflow page of its own (4.8 KB of disk a vector;
# 2.1 KB in this table, measured on 5,000 vectors).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cached_vectors (
    key BLOB PRIMARY KEY,
    space TEXT NOT NULL,
    vector BLOB NOT NULL,
    dropped_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cached_vectors_space ON cached_vectors (space);
"""
_OLD_TABLE = "vectors"
"""The WITHOUT ROWID table of caches made before; its rows move to `cached_vectors` at first open."""

_ROWS_PER_MOVE = 1000
"""Old rows moved a transaction at a time: each batch frees the pages the next one reuses, so the
move needs little free disk (one transaction's worth in the WAL), not the cache's size again."""

_WRITE_ATTEMPTS = 2
"""A write finding the cache locked waits the busy timeout twice before it fails."""

# SQLite caps the number of bound parameters in one statement.
_KEYS_PER_QUERY = 500

logger = logging.getLogger(__name__)


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def cache_key(space: str, text: str) -> bytes:
    # Length-prefixed, so no (space, text) pair can spell the same bytes as another.
    return hashlib.sha256(f"{len(space)}:{space}{text}".encode()).digest()


@dataclass(frozen=True)
class CachedVector:
    vector: npt.NDArray[np.float32]
    dropped_tokens: int


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    by_space: dict[str, int] = field(default_factory=dict)


class EmbeddingCache:
    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], float] = time.time,
        free_bytes: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free,
    ) -> None:
        self.path = path
        self._now = now
        self._free_bytes = free_bytes
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA, "embedding cache")
        try:
            self._move_old_rows()
        except BaseException:
            self._db.close()
            raise

    def _move_old_rows(self) -> None:
        """Move the rows of a cache made before into `cached_vectors`, then give the freed pages back."""
        if not self._has_old_rows():
            return
        need = self._room_to_move()
        free = self._free_bytes(self.path.parent)
        if free < need:
            raise ConfigurationError(
                f"the embedding cache at {self.path} must be moved to its new layout once, which needs about "
                f"{_mb(need)} free on its disk ({_mb(free)} free): free some space, or move cache.sqlite3 aside "
                "(its vectors are made again as texts are embedded), and start again."
            )
        try:
            # Checked inside each transaction's lock: another process may be moving them too.
            while self._move_some():
                pass
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"cannot move the cache to its new layout: {storage_error(exc, 'embedding cache', self.path)}"
            ) from exc
        self._vacuum()

    def _has_old_rows(self) -> bool:
        old = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_OLD_TABLE,))
        return old.fetchone() is not None

    def _room_to_move(self) -> int:
        """Free disk the move needs: a batch of rows twice (new table, WAL), at most the file's size, and 1 MiB."""
        size = self.path.stat().st_size
        rows = self._db.execute(f"SELECT COUNT(*) FROM {_OLD_TABLE}").fetchone()[0]
        return int(min(2 * min(rows, _ROWS_PER_MOVE) * size / max(rows, 1), size)) + (1 << 20)

    def _move_some(self) -> bool:
        """Move one batch of old rows; False once none are left (and the old table is gone)."""
        with write_transaction(self._db):
            if not self._has_old_rows():
                return False
            batch = f"SELECT key FROM {_OLD_TABLE} ORDER BY key LIMIT {_ROWS_PER_MOVE}"
            self._db.execute(f"INSERT OR IGNORE INTO cached_vectors SELECT * FROM {_OLD_TABLE} WHERE key IN ({batch})")
            if self._db.execute(f"DELETE FROM {_OLD_TABLE} WHERE key IN ({batch})").rowcount == 0:
                self._db.execute(f"DROP TABLE {_OLD_TABLE}")
        return True

    def _vacuum(self) -> None:
        """Shrink the file to its rows (the old layout took about twice the pages), when the disk has room."""
        page_size, pages, free_pages = (
            self._db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        )
        need = 2 * (pages - free_pages) * page_size  # a copy of the rows, and the WAL that writes it back
        if self._free_bytes(self.path.parent) < need:
            logger.warning(
                "the embedding cache at %s keeps %s of unused pages: vacuuming it needs about %s free on its disk",
                self.path,
                _mb(free_pages * page_size),
                _mb(need),
            )
            return
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # e.g. another process reading it: the rows are moved, only the size waits
            logger.warning("the embedding cache at %s was not vacuumed: %s", self.path, exc)

    def get_many(self, space: str, texts: Sequence[str], dimensions: int) -> dict[str, CachedVector]:
        """The cached vectors of `texts` in `space`, by text."""
        keys = {cache_key(space, text): text for text in texts}
        found: dict[str, CachedVector] = {}
        key_list = list(keys)
        with self._lock:
            for start in range(0, len(key_list), _KEYS_PER_QUERY):
                batch = key_list[start : start + _KEYS_PER_QUERY]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    f"SELECT key, vector, dropped_tokens FROM cached_vectors WHERE key IN ({marks})", batch
                ).fetchall()
                for key, blob, dropped in rows:
                    vector = np.frombuffer(blob, dtype="<f4")
                    if vector.shape == (dimensions,):  # a stale row of another size is ignored, not served
                        found[keys[key]] = CachedVector(vector.astype(np.float32), dropped)
        return found

    def put_many(
        self, space: str, texts: Sequence[str], vectors: npt.NDArray[np.float32], dropped_tokens: Sequence[int]
    ) -> int:
        """Store valid vectors (right length, all finite) in one transaction; returns how many were stored."""
        now = self._now()
        rows = [
            (cache_key(space, text), space, vector.astype("<f4").tobytes(), dropped, now)
            for text, vector, dropped in zip(texts, vectors, dropped_tokens, strict=True)
            if vector.ndim == 1 and vector.shape[0] == vectors.shape[1] > 0 and np.isfinite(vector).all()
        ]
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._lock, write_transaction(self._db):
                    self._db.executemany("INSERT OR REPLACE INTO cached_vectors VALUES (?, ?, ?, ?, ?)", rows)
                return len(rows)
            except sqlite3.Error as exc:
                # A lock held past the busy timeout is waited out once more; a full disk is not.
                if not is_busy(exc) or attempt == _WRITE_ATTEMPTS - 1:
                    raise storage_error(exc, "embedding cache", self.path) from exc
                logger.warning("the embedding cache at %s is locked by another process; waiting again", self.path)
        raise AssertionError("unreachable")  # pragma: no cover

    def stats(self) -> CacheStats:
        with self._lock:
            counts = self._db.execute("SELECT space, COUNT(*) FROM cached_vectors GROUP BY space ORDER BY space")
            by_space = dict(counts)
            size = self._db.execute("SELECT COALESCE(SUM(LENGTH(vector)), 0) FROM cached_vectors").fetchone()[0]
        return CacheStats(entries=sum(by_space.values()), bytes=int(size), by_space=by_space)

    def prune(self, *, space: str | None = None, older_than_s: float | None = None) -> int:
        """Delete entries of one space and/or older than `older_than_s` seconds (neither: all)."""
        where: list[str] = []
        args: list[object] = []
        if space is not None:
            where.append("space = ?")
            args.append(space)
        if older_than_s is not None:
            where.append("created < ?")
            args.append(self._now() - older_than_s)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            return self._db.execute(f"DELETE FROM cached_vectors{clause}", args).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
