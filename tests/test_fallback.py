"""Fallback and the circuit breaker, on scripted providers (the OpenAI path is in test_openai_fallback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from providers import (
    ConfigurationError,
    EmbeddingProvider,
    EmbeddingResult,
    EmbeddingService,
    InputError,
    ProviderUnavailableError,
    QuotaExceededError,
    Settings,
)
from providers.errors import ProviderError
from providers.fallback import CircuitBreaker, CircuitState, FallbackPolicy
from tests.fakes import FakeProvider

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedProvider(FakeProvider):
    """Fails with the queued errors, one per call, then works."""

    def __init__(self, name: str, dimensions: int) -> None:
        super().__init__(f"{name}-model", name=name, dimensions=dimensions)
        self.failures: list[Exception] = []

    async def embed(self, texts: Sequence[str], *, input_type="document", progress=None) -> EmbeddingResult:  # type: ignore[no-untyped-def]
        if self.failures:
            self.calls.append(list(texts))
            raise self.failures.pop(0)
        return await super().embed(texts, progress=progress)


def make(settings: Settings, **policy: object) -> tuple[EmbeddingService, ScriptedProvider, ScriptedProvider, Clock]:
    primary, local = ScriptedProvider("openai", 16), ScriptedProvider("local", 8)
    clock = Clock()
    settings = replace(settings, prices={"openai-model": 1_000_000.0}, fallback=FallbackPolicy(**policy))  # type: ignore[arg-type]
    factories = {"openai": lambda s, m, d: primary, "local": lambda s, m, d: local}
    return EmbeddingService("openai", settings=settings, factories=factories, now=clock), primary, local, clock


def test_the_breaker_opens_after_n_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30, now=clock)
    breaker.record_failure(ProviderUnavailableError("503"))
    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure(ProviderUnavailableError("503 again"))
    assert (breaker.state, breaker.retry_in_s, breaker.allows_request()) == (CircuitState.OPEN, 30, False)
    assert breaker.last_error == "ProviderUnavailableError: 503 again"
    clock.now += 30
    assert breaker.state is CircuitState.HALF_OPEN and breaker.allows_request()
    breaker.record_failure(ProviderUnavailableError("probe failed"))
    assert breaker.state is CircuitState.OPEN  # one failed probe re-opens it
    clock.now += 30
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.retry_in_s == 0


def test_a_quota_error_opens_the_breaker_at_once() -> None:
    breaker = CircuitBreaker(failure_threshold=5, now=Clock())
    breaker.record_failure(QuotaExceededError("no credit"))
    assert breaker.state is CircuitState.OPEN


async def test_no_credit_falls_back_at_once_and_marks_the_answer(settings: Settings) -> None:
    service, primary, local, _ = make(settings)
    primary.failures = [QuotaExceededError("insufficient_quota: add credit")]
    result = await service.embed(["def f(): pass", "x"])
    assert (result.provider, result.dimensions, result.space) == ("local", 8, local.space)
    assert result.fallback and "insufficient_quota" in (result.fallback_reason or "")
    assert result.requested_space == primary.space
    assert len(primary.calls) == 1  # no retry of a quota error
    # The circuit is open: the next call does not even try the primary.
    again = await service.embed(["y"])
    assert again.fallback and "unavailable after repeated failures" in (again.fallback_reason or "")
    assert len(primary.calls) == 1


async def test_an_outage_opens_the_circuit_and_recovery_closes_it(settings: Settings) -> None:
    service, primary, _, clock = make(settings, failure_threshold=2, cooldown_s=60)
    primary.failures = [ProviderUnavailableError("503 after 6 attempts")] * 2
    assert (await service.embed(["a"])).fallback
    assert (await service.embed(["b"])).fallback
    status = {s.name: s for s in service.provider_statuses()}
    assert status["openai"].circuit == "open" and "503" in (status["openai"].last_error or "")
    assert (await service.embed(["c"])).fallback and len(primary.calls) == 2  # open: not tried
    clock.now += 60
    recovered = await service.embed(["d"])  # the probe works
    assert not recovered.fallback and recovered.provider == "openai"
    assert {s.name: s.circuit for s in service.provider_statuses()} == {"openai": "closed", "local": "closed"}
    assert all(s.last_error is None for s in service.provider_statuses())  # health is now, not history


async def test_while_the_circuit_is_open_the_primarys_cached_vectors_still_answer(settings: Settings) -> None:
    service, primary, local, _ = make(settings, failure_threshold=1)
    before = await service.embed(["kept", "also kept"])
    primary.failures = [ProviderUnavailableError("503 after 6 attempts")]
    assert (await service.embed(["new"])).fallback  # the circuit opens
    cached = await service.embed(["also kept", "kept", "kept"])
    assert not cached.fallback and cached.space == primary.space and cached.cached == 3
    np.testing.assert_array_equal(cached.vectors[1], before.vectors[0])
    mixed = await service.embed(["kept", "not cached"])  # one text the primary would have to embed
    assert mixed.fallback and mixed.space == local.space
    assert len(primary.calls) == 2 and {s.name: s.circuit for s in service.provider_statuses()}["openai"] == "open"


async def test_progress_never_goes_backwards_when_a_fallback_starts_over(settings: Settings) -> None:
    service, primary, _, _ = make(settings)

    async def fails_at_three_of_four(texts, *, input_type="document", progress=None):  # type: ignore[no-untyped-def]
        await progress(3, 4)
        raise ProviderUnavailableError("connection dropped")

    primary.embed = fails_at_three_of_four  # type: ignore[method-assign]
    seen: list[tuple[int, int]] = []

    async def record(done: int, total: int) -> None:
        seen.append((done, total))

    result = await service.embed(["a", "b", "c", "d"], progress=record)
    assert result.fallback and seen == [(3, 4), (4, 4)]  # the local provider's (4, 4) only


async def test_a_failure_midway_keeps_the_paid_vectors_and_answers_from_one_space(settings: Settings) -> None:
    service, primary, _, _ = make(settings)
    texts = ["one", "two", "three", "four"]
    paid = EmbeddingResult(
        vectors=np.ones((2, 16), dtype=np.float32) / 4, provider="openai", model="openai-model", tokens=2
    )
    primary.failures = [ProviderUnavailableError("timeout after retries", partial=paid, partial_indexes=(0, 2))]
    result = await service.embed(texts)
    assert result.provider == "local" and result.vectors.shape == (4, 8)  # all four from one space
    assert service.cost_report().by_provider["openai"].usd == 2.0  # the paid half is accounted for...
    local_again = await service.embed(["one", "three", "two"], provider="local")
    assert local_again.cached == 3  # the fallback answer was cached in its own space
    service.switch_provider("openai")
    later = await service.embed(["one", "three", "two"])
    assert later.provider == "openai" and later.cached == 2  # ...and its vectors were kept for later
    assert primary.calls[-1] == ["two"]


async def test_the_never_policy_reports_the_failure(settings: Settings) -> None:
    service, primary, local, _ = make(settings, mode="never")
    primary.failures = [QuotaExceededError("insufficient_quota")]
    with pytest.raises(QuotaExceededError):
        await service.embed(["a"])
    assert local.calls == []
    with pytest.raises(ProviderUnavailableError, match="Retry later, or switch_provider"):
        await service.embed(["b"])  # the circuit is open and there is nowhere to go


async def test_bad_input_is_not_an_outage(settings: Settings) -> None:
    service, primary, local, _ = make(settings)
    primary.failures = [InputError("text 3 is too long")]
    with pytest.raises(InputError):
        await service.embed(["a"])
    assert local.calls == []


async def test_when_every_provider_is_down_the_error_says_so(settings: Settings) -> None:
    service, primary, local, _ = make(settings)
    primary.failures = [ProviderUnavailableError("openai down")]
    local.failures = [ProviderError("local broke")]
    with pytest.raises(ProviderError, match="local broke"):
        await service.embed(["a"])
    primary.failures = [ProviderUnavailableError("openai down")]
    local.failures = [ProviderUnavailableError("local down")]
    with pytest.raises(ProviderUnavailableError, match=r"openai down.*local failed too: local down.*No fallback"):
        await service.embed(["b"])


async def test_the_fallback_chain_is_configurable(settings: Settings) -> None:
    assert FallbackPolicy(chain=("local", "openai")).fallbacks_for("local") == ("openai",)
    assert FallbackPolicy().fallbacks_for("local") == ()
    assert FallbackPolicy().fallbacks_for("other") == ()
    with pytest.raises(ConfigurationError, match="fallback policy 'sometimes'"):
        FallbackPolicy(mode="sometimes")


async def test_statuses_show_each_provider_and_never_crash(settings: Settings) -> None:
    def broken(s: Settings, m: str | None, d: int | None) -> EmbeddingProvider:
        raise ConfigurationError("model files missing")

    service = EmbeddingService(
        "fake", settings=settings, factories={"fake": lambda s, m, d: FakeProvider(), "gone": broken}
    )
    statuses = {s.name: s for s in service.provider_statuses()}
    assert statuses["fake"].active and statuses["fake"].space == "fake:fake-small:8:l2"
    assert (statuses["gone"].circuit, statuses["gone"].last_error) == ("unavailable", "model files missing")
