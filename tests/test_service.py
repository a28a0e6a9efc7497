"""The service facade, on a deterministic fake provider (provider behaviour is tested elsewhere)."""

from __future__ import annotations

from dataclasses import replace

import anyio
import numpy as np
import pytest

from providers import (
    Budget,
    BudgetExceededError,
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
        def build(_: Settings, model: str | None, _dimensions: int | None) -> EmbeddingProvider:
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
    assert built[("fake", None)].calls == [["def f(): pass"]]  # one path, so one cache: the second was a hit


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
    service, _ = make_service(replace(settings, prices={"fake-small": 2.0, "paid-large": 10.0}))
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


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [("nope", None, "unknown provider 'nope'; choose one of: fake, paid"), ("fake", "gpt-9", "unknown model")],
)
async def test_switching_to_something_unknown_changes_nothing(
    settings: Settings, name: str, model: str | None, message: str
) -> None:
    service, _ = make_service(settings)
    with pytest.raises(ConfigurationError, match=message):
        service.switch_provider(name, model)
    assert service.provider.name == "fake"


def test_an_unknown_provider_at_construction_is_a_configuration_error(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="unknown provider 'anthropic'"):
        make_service(settings, provider="anthropic")


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


class GatedProvider(FakeProvider):
    """Holds every call until the gate opens, so calls overlap."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = anyio.Event()
        self.inside = 0

    async def embed(self, texts, *, input_type="document", progress=None):  # type: ignore[no-untyped-def]
        self.inside += 1
        await self.gate.wait()
        return await super().embed(texts, input_type=input_type, progress=progress)


def gated_service(settings: Settings, **budget: float) -> tuple[EmbeddingService, GatedProvider]:
    gated = GatedProvider()
    settings = replace(settings, prices={"gated": 1_000_000.0}, budget=Budget(period="all", **budget))  # $1 a token
    return EmbeddingService("fake", settings=settings, factories={"fake": lambda s, m, d: gated}), gated


async def test_concurrent_calls_cannot_together_pass_the_hard_limit(settings: Settings) -> None:
    service, gated = gated_service(settings, hard_usd=5.0)
    text = "a b c d e"  # estimated at 9 bytes // 3 + 1 = 4 tokens = $4: one call fits, two do not
    outcomes: list[str] = []

    async def call() -> None:
        try:
            await service.embed([text])
            outcomes.append("embedded")
        except BudgetExceededError:
            outcomes.append("refused")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
            while len(outcomes) < 2:  # two are refused while the first one is in flight
                await anyio.sleep(0)
            assert gated.inside == 1
            gated.gate.set()
    assert sorted(outcomes) == ["embedded", "refused", "refused"]
    assert service.get_cost() == 5.0  # settled to the reported usage (5 tokens), not the estimate


async def test_a_refused_call_sends_nothing_and_says_how_to_proceed(settings: Settings) -> None:
    service, gated = gated_service(settings, hard_usd=1.0)
    with pytest.raises(BudgetExceededError, match=r"hard limit of \$1\.000000.*SIGNAL_HUB_BUDGET_HARD_USD"):
        await service.embed(["def f(): return 1"])
    assert gated.inside == 0 and gated.calls == []


async def test_passing_the_soft_limit_warns_in_the_result(settings: Settings) -> None:
    service, gated = gated_service(settings, soft_usd=1.0)
    gated.gate.set()
    result = await service.embed(["one two"])
    assert result.warning is not None and "soft limit of $1.000000" in result.warning


async def test_a_model_with_no_price_cannot_run_under_a_hard_limit(settings: Settings) -> None:
    service, _ = make_service(replace(settings, budget=Budget(hard_usd=10.0)))
    with pytest.raises(BudgetExceededError, match=r"price of 'fake-small' is unknown.*SIGNAL_HUB_PRICES=fake-small="):
        await service.embed(["x"])


async def test_estimates_price_a_job_without_calling_the_provider(settings: Settings) -> None:
    service, built = make_service(replace(settings, prices={"paid-large": 0.5}))
    estimate = await service.estimate_cost(["x" * 30, "y" * 60], provider="paid")
    assert (estimate.provider, estimate.model, estimate.texts) == ("paid", "paid-large", 2)
    assert estimate.tokens == 11 + 21
    assert estimate.usd == pytest.approx(32 * 0.5 / 1e6)
    assert built[("paid", None)].calls == []
    assert (await service.estimate_cost(["z"])).usd is None  # fake-small has no price


async def test_the_ledger_keeps_the_session_and_all_time_apart(settings: Settings) -> None:
    first, _ = make_service(replace(settings, prices={"fake-small": 1_000_000.0}))
    await first.embed(["a b"])
    await first.aclose()
    second, _ = make_service(replace(settings, prices={"fake-small": 1_000_000.0}))
    await second.embed(["c"])
    assert second.get_cost() == 1.0
    assert second.cost_report(scope="all").total_usd == 3.0
    with pytest.raises(ConfigurationError, match="cost scope 'week'"):
        second.cost_report(scope="week")
