"""Input types through the core: the remote engine hands them to each request, spaces and the cache keep them apart."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import numpy as np
import pytest

from providers import EmbeddingService, InputError, InputType, Settings
from providers.errors import ProviderUnavailableError
from providers.fallback import FallbackPolicy
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.batching import RequestLimits
from providers.remote.retry import Reply
from tests.fakes import FakeProvider
from tests.loopback_openai import LoopbackOpenAI
from tests.test_openai_provider import KEY, FakeClock, LoopbackTokenizer

pytestmark = pytest.mark.anyio
WAIT = 20


class TypedOpenAI(OpenAIProvider):
    """The OpenAI provider as one that tells queries from documents: records what each request was sent as."""

    input_types = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[int, InputType]] = []

    async def _request(self, texts: list[str], input_type: InputType) -> Reply:
        self.sent.append((len(texts), input_type))
        return await super()._request(texts, input_type)


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as loopback:
        yield loopback


def typed(base_url: str) -> TypedOpenAI:
    clock = FakeClock()
    return TypedOpenAI(
        api_key=KEY,
        base_url=base_url,
        options=OpenAIOptions(request_timeout=5.0, limits=RequestLimits(max_inputs=2), concurrency=1),
        tokenizer=LoopbackTokenizer(),
        clock=clock,
        sleep=clock.sleep,
    )


async def test_the_remote_engine_sends_every_request_of_a_call_as_its_input_type(server: LoopbackOpenAI) -> None:
    provider = typed(server.base_url)
    try:
        with anyio.fail_after(WAIT):
            query = await provider.embed(["a", "b", "c"], input_type="query")
            document = await provider.embed(["d"])
    finally:
        await provider.aclose()
    assert provider.sent == [(2, "query"), (1, "query"), (1, "document")]
    assert query.space == "openai:text-embedding-3-small:1536:l2:query" == provider.space_for("query")
    assert document.space == provider.space == "openai:text-embedding-3-small:1536:l2:document"


async def test_a_provider_that_ignores_input_types_keeps_its_space_name(server: LoopbackOpenAI) -> None:
    clock = FakeClock()
    plain = OpenAIProvider(api_key=KEY, base_url=server.base_url, tokenizer=LoopbackTokenizer(), clock=clock)
    try:
        with anyio.fail_after(WAIT):
            query = await plain.embed(["a"], input_type="query")
    finally:
        await plain.aclose()
    assert query.space == plain.space_for("query") == plain.space == "openai:text-embedding-3-small:1536:l2"


def service_with(settings: Settings, provider: FakeProvider) -> EmbeddingService:
    return EmbeddingService("fake", settings=settings, factories={"fake": lambda s, m, d: provider})


async def test_the_cache_never_serves_a_query_vector_for_a_document(settings: Settings) -> None:
    provider = FakeProvider(input_types=True)
    async with service_with(settings, provider) as service:
        query = await service.embed(["find the parser"], input_type="query")
        document = await service.embed(["find the parser"])
        again = await service.embed(["find the parser"], input_type="query")
    assert provider.calls == [["find the parser"], ["find the parser"]] and provider.types == ["query", "document"]
    assert (query.cached, document.cached, again.cached) == (0, 0, 1)
    assert not np.allclose(query.vectors, document.vectors)
    np.testing.assert_array_equal(again.vectors, query.vectors)
    assert (query.space, document.space) == ("fake:fake-small:8:l2:query", "fake:fake-small:8:l2:document")


async def test_a_provider_that_ignores_input_types_shares_one_cache_entry_between_them(settings: Settings) -> None:
    provider = FakeProvider()
    async with service_with(settings, provider) as service:
        await service.embed(["def f(): pass"], input_type="query")
        document = await service.embed(["def f(): pass"])
    assert provider.calls == [["def f(): pass"]] and document.cached == 1 and document.space == "fake:fake-small:8:l2"


async def test_rank_texts_embeds_the_query_as_a_query_and_the_texts_as_documents(settings: Settings) -> None:
    provider = FakeProvider(input_types=True)
    async with service_with(settings, provider) as service:
        ranked = await service.rank_texts("parse", ["parse", "render"], top_k=2)
        query = await service.embed(["parse"], input_type="query")
        documents = await service.embed(["parse", "render"])
    assert sorted(zip(provider.types, provider.calls, strict=True)) == [
        ("document", ["parse", "render"]),
        ("query", ["parse"]),
    ]
    assert query.cached == 1 and documents.cached == 2  # both sides were cached under their own type
    np.testing.assert_allclose(ranked.embedding.vectors, np.concatenate([query.vectors, documents.vectors]))
    assert ranked.embedding.tokens == 3 and ranked.embedding.space == "fake:fake-small:8:l2:document"


async def test_rank_texts_makes_one_call_for_a_provider_that_ignores_input_types(settings: Settings) -> None:
    provider = FakeProvider()
    async with service_with(settings, provider) as service:
        ranked = await service.rank_texts("parse", ["parse", "render"], top_k=1)
    assert provider.calls == [["parse", "render"]]  # the query is a text like the others: embedded once
    assert ranked.results[0].index == 0


async def test_the_python_api_takes_the_input_type(settings: Settings) -> None:
    provider = FakeProvider(input_types=True)
    async with service_with(settings, provider) as service:
        one = await service.generate("x", input_type="query")
        many = await service.batch_generate(["x"], input_type="query")
        plain = await service.generate("x")
        with pytest.raises(InputError, match="input_type 'code' is not one of: document, query"):
            await service.embed(["x"], input_type="code")  # type: ignore[arg-type]
    assert one == many[0] and one != plain and provider.types == ["query", "document"]


async def test_a_fallback_answers_in_its_own_space_of_the_asked_type(settings: Settings) -> None:
    primary, other = FakeProvider(name="primary", input_types=True), FakeProvider(name="other", input_types=True)

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ProviderUnavailableError("down")

    primary.embed = down  # type: ignore[method-assign]
    factories = {"primary": lambda s, m, d: primary, "other": lambda s, m, d: other}
    settings = replace(settings, fallback=FallbackPolicy(chain=("primary", "other")))
    async with EmbeddingService("primary", settings=settings, factories=factories) as service:
        result = await service.embed(["x"], input_type="query")
    assert result.space == "other:fake-small:8:l2:query" and result.requested_space == "primary:fake-small:8:l2:query"


async def test_rank_texts_asks_a_fallback_that_tells_types_apart_for_a_query_vector(settings: Settings) -> None:
    primary, other = FakeProvider(name="primary"), FakeProvider(name="other", input_types=True)

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ProviderUnavailableError("down")

    primary.embed = down  # type: ignore[method-assign]
    factories = {"primary": lambda s, m, d: primary, "other": lambda s, m, d: other}
    settings = replace(settings, fallback=FallbackPolicy(chain=("primary", "other")))
    async with EmbeddingService("primary", settings=settings, factories=factories) as service:
        ranked = await service.rank_texts("parse", ["render", "parse"], top_k=2)
        query = await service.embed(["parse"], input_type="query", provider="other")
    assert other.types == ["document", "query"] and other.calls == [["parse", "render"], ["parse"]]
    assert ranked.embedding.fallback and ranked.embedding.space == "other:fake-small:8:l2:document"
    assert query.cached == 1
    np.testing.assert_array_equal(ranked.embedding.vectors[0], query.vectors[0])
    assert ranked.embedding.vectors.shape == (3, 8)
