"""The content-addressed cache, on its own and inside the service."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from providers import EmbeddingProvider, EmbeddingService, Settings
from providers.storage.cache import EmbeddingCache, cache_key
from tests.fakes import FakeProvider, fake_vector

pytestmark = pytest.mark.anyio


def service_with(settings: Settings, **models: FakeProvider) -> EmbeddingService:
    def factory(_: Settings, model: str | None, _dimensions: int | None) -> EmbeddingProvider:
        return models[model or "fake-small"]

    return EmbeddingService("fake", settings=settings, factories={"fake": factory})


@pytest.fixture
def priced(settings: Settings) -> Settings:
    return replace(settings, prices={"fake-small": 1_000_000.0, "fake-large": 1_000_000.0})  # $1 a token


async def test_a_second_call_is_served_from_the_cache_at_no_cost(priced: Settings) -> None:
    fake = FakeProvider()
    service = service_with(priced, **{"fake-small": fake})
    first = await service.embed(["alpha beta", "gamma"])
    second = await service.embed(["gamma", "alpha beta", "delta"])
    assert fake.calls == [["alpha beta", "gamma"], ["delta"]]
    assert (second.cached, second.tokens, second.cost_usd) == (2, 1, 1.0)
    np.testing.assert_array_equal(second.vectors[1], first.vectors[0])
    np.testing.assert_array_equal(second.vectors[2], fake_vector("delta", 8))

    report = service.cost_report()
    assert (report.total.cached, report.total.embeddings) == (2, 5)
    assert report.total.saved_usd == pytest.approx(2.0 + 4.0)  # estimated: 5//3+1 and 10//3+1 tokens
    assert report.total_usd == 4.0  # 3 reported tokens, then 1


async def test_the_cache_survives_a_restart(priced: Settings) -> None:
    await service_with(priced, **{"fake-small": FakeProvider()}).embed(["persisted text"])
    fake = FakeProvider()
    again = await service_with(priced, **{"fake-small": fake}).embed(["persisted text"])
    assert fake.calls == [] and again.cached == 1 and again.requests == 0


async def test_another_model_never_gets_a_vector_of_the_first(priced: Settings) -> None:
    small, large = FakeProvider("fake-small"), FakeProvider("fake-large")
    service = service_with(priced, **{"fake-small": small, "fake-large": large})
    await service.embed(["shared text"])
    service.switch_provider("fake", "fake-large")
    result = await service.embed(["shared text"])
    assert large.calls == [["shared text"]] and result.cached == 0


async def test_duplicates_in_one_call_are_embedded_once_and_copied(priced: Settings) -> None:
    fake = FakeProvider()
    service = service_with(replace(priced, cache=False), **{"fake-small": fake})
    result = await service.embed(["a", "b", "a", "a", "b"])
    assert fake.calls == [["a", "b"]]
    assert result.duplicates == 3 and result.count == 5
    np.testing.assert_array_equal(result.vectors[3], result.vectors[0])
    np.testing.assert_array_equal(result.vectors[4], result.vectors[1])
    assert service.cache is None  # turned off: nothing persisted
    await service.embed(["a"])
    assert fake.calls[-1] == ["a"]


async def test_progress_counts_cache_hits_as_done(priced: Settings) -> None:
    service = service_with(priced, **{"fake-small": FakeProvider()})
    await service.embed(["one", "two"])
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    await service.embed(["one", "two", "three"], progress=progress)
    assert seen == [(3, 3)]
    seen.clear()
    await service.embed(["one"], progress=progress)
    assert seen == [(1, 1)]


def test_invalid_vectors_are_never_stored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3")
    vectors = np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, np.inf]], dtype=np.float32)
    assert cache.put_many("s", ["ok", "nan", "inf"], vectors, [0, 0, 0]) == 1
    assert set(cache.get_many("s", ["ok", "nan", "inf"], 2)) == {"ok"}
    assert cache.get_many("s", ["ok"], 3) == {}  # a stored vector of another length is not served


def test_the_key_is_the_space_and_the_text() -> None:
    assert cache_key("a:m:2:l2", "text") != cache_key("a:m:3:l2", "text")
    assert cache_key("a:m:2:l2", "text") == cache_key("a:m:2:l2", "text")
    assert cache_key("x", "y\0z") != cache_key("x\0y", "z")


def test_stats_and_pruning(tmp_path: Path) -> None:
    now = [1000.0]
    cache = EmbeddingCache(tmp_path / "c.sqlite3", now=lambda: now[0])
    cache.put_many("old", ["a", "b"], np.ones((2, 4), dtype=np.float32), [0, 0])
    now[0] = 5000.0
    cache.put_many("new", ["a"], np.ones((1, 4), dtype=np.float32), [0])
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.by_space) == (3, 48, {"new": 1, "old": 2})
    assert cache.prune(older_than_s=1000) == 2
    assert cache.prune(space="new") == 1
    assert cache.stats().entries == 0


def test_many_texts_are_looked_up_in_pages(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3")
    texts = [f"t{i}" for i in range(1200)]
    cache.put_many("s", texts, np.ones((1200, 2), dtype=np.float32), [0] * 1200)
    assert len(cache.get_many("s", texts, 2)) == 1200


def test_truncation_is_remembered_with_the_vector(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3")
    cache.put_many("s", ["long"], np.ones((1, 2), dtype=np.float32), [42])
    assert cache.get_many("s", ["long"], 2)["long"].dropped_tokens == 42


def test_a_cache_made_before_keeps_its_vectors_in_the_new_table(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "cache.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE vectors (key BLOB PRIMARY KEY, space TEXT NOT NULL, vector BLOB NOT NULL,"
        " dropped_tokens INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL) WITHOUT ROWID;"
        "CREATE INDEX vectors_space ON vectors (space);"
    )
    vector = fake_vector("kept", 8)
    old.execute("INSERT INTO vectors VALUES (?, ?, ?, ?, ?)", (cache_key("s", "kept"), "s", vector.tobytes(), 3, 1.0))
    old.commit()
    old.close()

    cache = EmbeddingCache(path)
    hit = cache.get_many("s", ["kept"], 8)["kept"]
    np.testing.assert_array_equal(hit.vector, vector)
    assert hit.dropped_tokens == 3
    assert cache.stats().entries == 1
    cache.close()
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"cached_vectors"}
    EmbeddingCache(path).close()  # opening again finds nothing left to move


def test_a_384_float_vector_takes_under_2_5_kb_of_disk(tmp_path: Path) -> None:
    # The old WITHOUT ROWID table put each vector on an overflow page of its own: 4.8 KB each.
    cache = EmbeddingCache(tmp_path / "cache.sqlite3")
    texts = [f"def f_{i}(): return {i}" for i in range(2000)]
    vectors = np.random.default_rng(0).standard_normal((2000, 384)).astype(np.float32)
    cache.put_many("local:m:384:l2", texts, vectors, [0] * 2000)
    cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    assert (tmp_path / "cache.sqlite3").stat().st_size / 2000 < 2500
