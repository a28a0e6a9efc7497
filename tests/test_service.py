"""The service facade, on a deterministic fake provider (provider behaviour is tested elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from providers import (
    ConfigurationError,
    EmbeddingProvider,
    EmbeddingService,
    InputError,
    Settings,
)
from tests.fakes import FakeProvider, fake_vector

pytestmark = pytest.mark.anyio


def make_service(settings: Settings, provider: str = "fake", **kwargs: object) -> tuple[EmbeddingService, dict]:
    built: dict[tuple[str, str | None], FakeProvider] = {}

    def factory(name: str, default_model: str, dimensions: int):
        def build(_: Settings, model: str | None) -> EmbeddingProvider:
            chosen = model or default_model
            if chosen not in {default_model, f"{default_model}-v2"}:
                raise ConfigurationError(f"unknown model {chosen!r}")
            built[(name, model)] = FakeProvider(chosen, name=name, dimensions=dimensions)
            return built[(name, model)]

        return build

    factories = {"fake": factory("fake", "fake-small", 8), "paid": factory("paid", "paid-large", 16)}
    service = EmbeddingService(provider, settings=settings, factories=factories, **kwargs)  # type: ignore[arg-type]
    return service, built


async def test_the_product_spec_demo_runs_as_written(settings: Settings) -> None:
    service, _ = make_service(settings)
    embedding = await service.generate("def calculate_total(items):")
    assert len(embedding) == 8
    embeddings = await service.batch_generate(["chunk1", "chunk2", "chunk3"])
    assert len(embeddings) == 3
    # The fake model has no known price: its 2 + 3 tokens are reported unpriced, not as free.
    assert service.get_cost() == 0.0
    assert service.cost_report().total.unpriced_tokens == 5


async def test_generate_is_batch_generate_of_one(settings: Settings) -> None:
    service, built = make_service(settings)
    single = await service.generate("def f(): pass")
    batch = await service.batch_generate(["def f(): pass"])
    assert single == batch[0]
    assert built[("fake", None)].calls == [["def f(): pass"], ["def f(): pass"]]


async def test_vectors_come_back_in_input_order(settings: Settings) -> None:
    service, _ = make_service(settings)
    texts = [f"chunk {i}" for i in range(20)]
    vectors = await service.batch_generate(texts)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, fake_vector(text, 8))


async def test_bad_input_never_reaches_the_provider(settings: Settings) -> None:
    service, built = make_service(settings)
    with pytest.raises(InputError, match="position 1"):
        await service.batch_generate(["fine", "   "])
    assert built[("fake", None)].calls == []


async def test_cost_is_tokens_times_price_and_is_broken_down(settings: Settings) -> None:
    service, _ = make_service(settings, price_overrides={"fake-small": 2.0, "paid-large": 10.0})
    result = await service.embed(["one two three"])
    assert result.cost_usd == pytest.approx(3 * 2.0 / 1e6)
    await service.embed(["a b", "c"], provider="paid")
    assert service.get_cost() == pytest.approx((3 * 2.0 + 3 * 10.0) / 1e6)
    report = service.cost_report()
    assert report.total.embeddings == 3
    assert report.total.requests == 2
    assert report.by_provider["paid"].tokens == 3
    assert report.by_model["fake-small"].usd == pytest.approx(6e-6)
    report.by_model["fake-small"].usd = 99.0  # a copy: the session's totals stay right
    assert service.cost_report().by_model["fake-small"].usd == pytest.approx(6e-6)


async def test_a_call_can_name_another_provider_without_switching(settings: Settings) -> None:
    service, _ = make_service(settings)
    result = await service.embed(["x"], provider="paid")
    assert (result.provider, result.dimensions) == ("paid", 16)
    assert service.provider.name == "fake"


async def test_switching_reports_old_and_new_and_reuses_instances(settings: Settings) -> None:
    service, built = make_service(settings)
    switched = service.switch_provider("paid")
    assert (switched.provider, switched.model, switched.dimensions) == ("paid", "paid-large", 16)
    assert (switched.previous_provider, switched.previous_model) == ("fake", "fake-small")
    assert (await service.embed(["x"])).provider == "paid"
    service.switch_provider("fake", "fake-small")
    assert service.provider is built[("fake", None)]  # the loaded provider is kept, not rebuilt
    service.switch_provider("fake", "fake-small-v2")
    assert service.provider.model == "fake-small-v2"


@pytest.mark.parametrize(("name", "model", "message"), [("nope", None, "unknown provider 'nope'; choose one of: fake, paid"), ("fake", "gpt-9", "unknown model")])
async def test_switching_to_something_unknown_changes_nothing(settings: Settings, name: str, model: str | None, message: str) -> None:
    service, _ = make_service(settings)
    with pytest.raises(ConfigurationError, match=message):
        service.switch_provider(name, model)
    assert service.provider.name == "fake"


def test_an_unknown_provider_at_construction_is_a_configuration_error(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="unknown provider 'cohere'"):
        make_service(settings, provider="cohere")


async def test_closing_the_service_closes_every_provider_once(settings: Settings) -> None:
    service, built = make_service(settings)
    service.switch_provider("paid")
    async with service:
        pass
    assert all(p.closed for p in built.values())


def test_the_default_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNAL_HUB_PROVIDER", "local")
    service = EmbeddingService()
    assert (service.provider.name, service.provider.model) == ("local", "all-MiniLM-L6-v2")
    assert service.provider.dimensions == 384  # read from the model's config, without loading it
