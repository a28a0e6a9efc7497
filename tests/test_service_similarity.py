"""EmbeddingService.rank_texts / find_duplicates: one embedding call each, cached, fallback marked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from providers import EmbeddingService, InputError, ProviderUnavailableError, Settings
from providers.fallback import FallbackPolicy
from tests.fakes import FakeProvider
from tests.test_fallback import ScriptedProvider

pytestmark = pytest.mark.anyio


def fake_service(settings: Settings) -> tuple[EmbeddingService, FakeProvider]:
    provider = FakeProvider(dimensions=16)
    return EmbeddingService("fake", settings=settings, factories={"fake": lambda s, m, d: provider}), provider


async def test_rank_texts_embeds_query_and_candidates_in_one_call_and_finds_the_copy(settings: Settings) -> None:
    service, provider = fake_service(settings)
    texts = ["alpha", "beta", "the query", "gamma"]
    ranked = await service.rank_texts("the query", texts, top_k=2)
    # The query repeats a candidate: embedded once, in one call with the rest.
    assert provider.calls == [["the query", "alpha", "beta", "gamma"]]
    assert ranked.results[0].index == 2 and ranked.results[0].score == pytest.approx(1.0, abs=1e-6)
    assert len(ranked.results) == 2
    assert ranked.embedding.space == "fake:fake-small:16:l2" and not ranked.embedding.fallback

    again = await service.rank_texts("the query", texts, top_k=2)
    assert again.embedding.cached == 5 and len(provider.calls) == 1  # all from the cache
    assert again.results == ranked.results


async def test_find_duplicates_groups_repeated_texts(settings: Settings) -> None:
    service, provider = fake_service(settings)
    found = await service.find_duplicates(["a", "b", "a", "c", "b", "a"], threshold=0.99)
    assert [g.indexes for g in found.duplicates.groups] == [(0, 2, 5), (1, 4)]
    assert found.duplicates.pairs_checked == 15
    assert provider.calls == [["a", "b", "c"]]
    assert found.embedding.duplicates == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.rank_texts("  ", ["a"]), "query is empty"),
        (lambda s: s.rank_texts("q", ["a"], top_k=0), "top_k must be at least 1"),
        (lambda s: s.rank_texts("q" * 100_001, ["a"]), "query is longer than 100,000"),
        (lambda s: s.rank_texts("q", []), "texts is empty"),
        (lambda s: s.find_duplicates(["a", " "]), "position 1"),
        (lambda s: s.find_duplicates(["a"], threshold=1.5), "between -1 and 1"),
    ],
)
async def test_bad_similarity_calls_are_input_errors_before_any_work(settings: Settings, call, message) -> None:  # type: ignore[no-untyped-def]
    service, provider = fake_service(settings)
    with pytest.raises(InputError, match=message):
        await call(service)
    assert provider.calls == []


async def test_2048_candidates_are_accepted_beside_the_query(settings: Settings) -> None:
    service, _ = fake_service(settings)
    texts = [f"t{i}" for i in range(2048)]
    ranked = await service.rank_texts("t7", texts, top_k=3)
    assert ranked.results[0].index == 7 and ranked.embedding.count == 2049


async def test_a_fallback_answers_the_whole_ranking_from_one_space_and_says_so(settings: Settings) -> None:
    primary, local = ScriptedProvider("openai", 16), ScriptedProvider("local", 8)
    primary.failures = [ProviderUnavailableError("down")]
    settings = replace(settings, fallback=FallbackPolicy())
    service = EmbeddingService(
        "openai", settings=settings, factories={"openai": lambda s, m, d: primary, "local": lambda s, m, d: local}
    )
    ranked = await service.rank_texts("q", ["x", "q"], top_k=1)
    assert ranked.embedding.fallback and ranked.embedding.space == "local:local-model:8:l2"
    assert ranked.embedding.requested_space == "openai:openai-model:16:l2"
    assert ranked.results[0].index == 1
    assert local.calls == [["q", "x"]]


async def test_spend_totals_name_the_budget_period(settings: Settings) -> None:
    service, _ = fake_service(replace(settings, prices={"fake-small": 1_000_000.0}))
    await service.rank_texts("one two", ["three"])
    totals = service.spend_totals()
    assert (totals.session_usd, totals.period, totals.period_usd, totals.all_time_usd) == (3.0, "month", 3.0, 3.0)


def test_a_missing_openai_key_is_a_warning_that_shows_no_key(settings: Settings) -> None:
    service = EmbeddingService("local", settings=settings)
    assert "OPENAI_API_KEY" in (service.key_warning("openai") or "")
    assert service.key_warning("local") is None
    keyed = EmbeddingService("local", settings=replace(settings, openai_api_key="sk-secret"))
    assert keyed.key_warning("openai") is None
