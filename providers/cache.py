"""A persistent, content-addressed cache of vectors, keyed by the vector space and the text.

The key is sha256(space id, text): provider, model, dimensions and normalisation are part of it,
so a vector made by another model can never come back. Vectors are float32 blobs in SQLite (WAL,
busy timeout), shared safely by several processes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .sqlite import open_database, write_transaction

__all__ = ["CacheStats", "CachedVector", "EmbeddingCache", "cache_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    key BLOB PRIMARY KEY,
    space TEXT NOT NULL,
    vector BLOB NOT NULL,
    dropped_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_space ON vectors (space);
"""

# SQLite caps the number of bound parameters in one statement.
_KEYS_PER_QUERY = 500


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
    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA, "embedding cache")

    def get_many(self, space: str, texts: Sequence[str], dimensions: int) -> dict[str, CachedVector]:
        """The cached vectors of `texts` in `space`, by text."""
        keys = {cache_key(space, text): text for text in texts}
        found: dict[str, CachedVector] = {}
        key_list = list(keys)
        with self._lock:
            for start in range(0, len(key_list), _KEYS_PER_QUERY):
                batch = key_list[start : start + _KEYS_PER_QUERY]
                rows = self._db.execute(
                    f"SELECT key, vector, dropped_tokens FROM vectors WHERE key IN ({','.join('?' * len(batch))})",
                    batch,
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
        with self._lock, write_transaction(self._db):
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)
        return len(rows)

    def stats(self) -> CacheStats:
        with self._lock:
            by_space = dict(self._db.execute("SELECT space, COUNT(*) FROM vectors GROUP BY space ORDER BY space"))
            size = self._db.execute("SELECT COALESCE(SUM(LENGTH(vector)), 0) FROM vectors").fetchone()[0]
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
            return self._db.execute(f"DELETE FROM vectors{clause}", args).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
