"""Ledger and cache files are checked when opened: a damaged one is refused, by name, with what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from providers import ConfigurationError, CostLedger, EmbeddingResult
from providers.storage.cache import EmbeddingCache

ONE = EmbeddingResult(vectors=np.zeros((1, 4), np.float32), provider="openai", model="m", tokens=5)


def damage_after_first_page(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(np.random.default_rng(1).bytes(size - 4096))


def test_a_ledger_with_damaged_pages_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    for _ in range(500):
        ledger.record(ONE)
    ledger.close()
    damage_after_first_page(path)
    with pytest.raises(ConfigurationError) as refused:
        CostLedger(path)
    message = str(refused.value)
    assert f"the cost ledger at {path} is damaged (" in message
    assert f"mv {path} {path}.damaged" in message and "\n" not in message


def test_a_file_that_is_not_a_database_is_refused_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(np.random.default_rng(2).bytes(20_000))
    with pytest.raises(ConfigurationError, match=r"the embedding cache at .* is damaged \(file is not a database\)"):
        EmbeddingCache(path)


def test_an_intact_ledger_opens_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    ledger.record(ONE)
    ledger.close()
    assert CostLedger(path).report().total.tokens == 5


def test_storage_errors_say_what_to_do_by_what_failed(tmp_path: Path) -> None:
    import sqlite3

    from providers.storage.sqlite import storage_error

    def error(message: str, code: int | None = None) -> sqlite3.Error:
        exc = sqlite3.OperationalError(message)
        if code is not None:
            exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        return exc

    path = tmp_path / "cache.sqlite3"
    damaged = str(storage_error(error("database disk image is malformed", sqlite3.SQLITE_CORRUPT), "cache", path))
    assert f"mv {path} {path}.damaged" in damaged  # only damage is a reason to move a file aside
    readonly = storage_error(error("attempt to write a readonly database", sqlite3.SQLITE_READONLY), "cache", path)
    assert "Check that the data directory (SIGNAL_HUB_DATA_DIR) is writable" in str(readonly)
    other = str(storage_error(error("something odd"), "cache", path))
    assert other.startswith(f"the cache at {path} failed (OperationalError: something odd). Retry")
    for passing in (error("database is locked"), error("database or disk is full", sqlite3.SQLITE_FULL)):
        assert "nothing stored is lost" in str(storage_error(passing, "job store", path))
        assert "aside" not in str(storage_error(passing, "job store", path))
