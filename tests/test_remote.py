"""The remote-request engine through the OpenAI provider: what only the engine decides."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import numpy as np
import pytest

from providers import EmbeddingResult, EmbeddingService, Settings
from providers.errors import ProviderUnavailableError
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.batching import RequestLimits
from tests.loopback_openai import LoopbackOpenAI, count_tokens
from tests.test_openai_provider import KEY, FakeClock, LoopbackTokenizer, socket_without_listener

pytestmark = pytest.mark.anyio
WAIT = 10


def texts(n: int) -> list[str]:
    return [f"def handler_{i}(event): return event.id + {i}" for i in range(n)]


def provider(base_url: str, clock: FakeClock, **options: Any) -> OpenAIProvider:
    return OpenAIProvider(
        api_key=KEY,
        base_url=base_url,
        options=OpenAIOptions(**{"request_timeout": 5.0, **options}),
        tokenizer=LoopbackTokenizer(),
        clock=clock,
        sleep=clock.sleep,
    )


async def test_a_refused_connection_is_an_outage_after_two_attempts_naming_host_and_port() -> None:
    clock = FakeClock()
    with socket_without_listener() as port:
        refused = provider(f"http://127.0.0.1:{port}/v1", clock)  # max_attempts stays 6
        try:
            with anyio.fail_after(WAIT), pytest.raises(ProviderUnavailableError) as raised:
                await refused.embed(texts(1))
        finally:
            await refused.aclose()
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message and "connection refused" in message and "after 2 attempts" in message
    assert len(clock.sleeps) == 1 and clock.sleeps[0] <= 0.5  # one short backoff, not five growing ones


async def test_each_request_is_handed_over_as_it_completes(server: LoopbackOpenAI) -> None:
    clock = FakeClock()
    seen: list[tuple[list[int], EmbeddingResult]] = []

    async def on_request(indexes: list[int], piece: EmbeddingResult) -> None:
        seen.append((indexes, piece))

    items = texts(7)
    chunked = provider(server.base_url, clock, limits=RequestLimits(max_inputs=3), concurrency=1)
    try:
        with anyio.fail_after(WAIT):
            result = await chunked.embed_each(items, on_request=on_request)
    finally:
        await chunked.aclose()
    assert [indexes for indexes, _ in seen] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [piece.requests for _, piece in seen] == [1, 1, 1]
    assert sum(piece.tokens for _, piece in seen) == result.tokens == sum(count_tokens(t) for t in items)
    np.testing.assert_allclose(np.concatenate([piece.vectors for _, piece in seen]), result.vectors)


async def test_the_service_records_and_caches_each_request_once(server: LoopbackOpenAI, tmp_path: Any) -> None:
    clock = FakeClock()
    made: list[OpenAIProvider] = []

    def factory(settings: Settings, model: str | None, dimensions: int | None) -> OpenAIProvider:
        made.append(provider(server.base_url, clock, limits=RequestLimits(max_inputs=2), concurrency=1))
        return made[-1]

    service = EmbeddingService("openai", settings=Settings(data_dir=tmp_path), factories={"openai": factory})
    try:
        with anyio.fail_after(WAIT):
            result = await service.embed(texts(5) + texts(1))  # a duplicate: embedded once
        report = service.cost_report(scope="all")
        assert (report.total.requests, report.total.tokens) == (3, result.tokens) == (3, server.tokens_served)
        assert report.total.embeddings == 6 and report.total_usd == pytest.approx(result.cost_usd)
        assert service.cache is not None and len(service.cache.get_many(made[0].space, texts(5), 1536)) == 5
    finally:
        await service.aclose()


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as loopback:
        yield loopback
