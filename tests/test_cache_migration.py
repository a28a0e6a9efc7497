"""A cache of the old layout (WITHOUT ROWID, ~4.8 KB a vector) moved to the new one at first open.

Issue 24 #13: the move needed about the cache's size again in free disk, and without it every start
failed with a traceback and exit 1; the file also grew, as nothing vacuumed it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from providers import ConfigurationError
from providers.storage.cache import EmbeddingCache, cache_key
from tests.small_disk import fill, small_disk

ROOT = Path(__file__).resolve().parents[1]
SPACE = "local:all-MiniLM-L6-v2:384:l2"


def old_cache(path: Path, rows: int) -> list[str]:
    """A cache as the release before wrote it: `rows` 384-float vectors in the WITHOUT ROWID table."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE vectors (key BLOB PRIMARY KEY, space TEXT NOT NULL, vector BLOB NOT NULL,"
        " dropped_tokens INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL) WITHOUT ROWID;"
        "CREATE INDEX vectors_space ON vectors (space);"
    )
    texts = [f"def f_{i}(): return {i}" for i in range(rows)]
    vectors = np.random.default_rng(0).standard_normal((rows, 384)).astype("<f4")
    db.executemany(
        "INSERT INTO vectors VALUES (?, ?, ?, 0, 1.0)",
        [(cache_key(SPACE, t), SPACE, v.tobytes()) for t, v in zip(texts, vectors, strict=True)],
    )
    db.commit()
    db.close()
    return texts


def test_the_move_keeps_every_vector_and_the_vacuum_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    texts = old_cache(path, 2500)  # more than one batch
    before = path.stat().st_size
    cache = EmbeddingCache(path)
    try:
        assert cache.stats().entries == 2500
        assert len(cache.get_many(SPACE, texts, 384)) == 2500
    finally:
        cache.close()
    after = path.stat().st_size + (
        path.with_name(path.name + "-wal").stat().st_size if Path(f"{path}-wal").exists() else 0
    )
    assert after < 0.6 * before  # 2.1 KB a vector instead of 4.8 KB: the old pages were given back


def test_too_little_free_disk_for_the_move_is_one_line_saying_what_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    old_cache(path, 200)
    with pytest.raises(ConfigurationError) as refused:
        EmbeddingCache(path, free_bytes=lambda _: 100_000)
    message = str(refused.value)
    assert "\n" not in message and "needs about 2.0 MB free on its disk (0.1 MB free)" in message
    assert "free some space, or move cache.sqlite3 aside" in message
    assert EmbeddingCache(path).stats().entries == 200  # nothing was lost: with room, the move goes on


def test_a_server_starting_on_a_full_disk_with_an_old_cache_exits_2_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with small_disk(data, 4096):
        old_cache(data / "cache.sqlite3", 500)
        fill(data, 300_000)
        env = {**os.environ, "SIGNAL_HUB_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        server = subprocess.run(
            [sys.executable, "-m", "server"], input="", capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
        )
    assert server.returncode == 2, server.stderr
    lines = server.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be moved to its new layout once, which needs about" in lines[0]
    assert "Traceback" not in server.stderr
