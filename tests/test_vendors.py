"""Voyage, Gemini, Cohere and Mistral, each through the real HTTP client against a loopback server speaking its API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx2
import numpy as np
import pytest

from providers import EmbeddingService, Settings
from providers.cohere import CohereProvider
from providers.cost import price_per_million
from providers.errors import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from providers.fallback import FallbackPolicy
from providers.gemini import GeminiProvider
from providers.mistral import MistralProvider
from providers.remote.batching import RequestLimits
from providers.remote.vendor import VendorProvider
from providers.remote.vendor_spec import VendorOptions
from providers.service.facade import PROVIDER_FACTORIES
from providers.text.tokens import Utf8ByteEstimate
from providers.voyage import VoyageProvider
from tests.fakes import FakeProvider
from tests.loopback_vendors import (
    FLAVOURS,
    KEY,
    MISTRAL_LIMIT_TOKENS,
    SMALLEST,
    Flavour,
    LoopbackVendor,
    vector_for,
    words,
)
from tests.test_openai_provider import FakeClock, socket_without_listener

pytestmark = pytest.mark.anyio
WAIT = 20

KEY_VARIABLES = {
    "voyage": "VOYAGE_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "mistral": "MISTRAL_API_KEY",
}
DOCUMENTED = {  # texts per request, tokens per text, tokens per request, default length, price per 1M
    "voyage": (RequestLimits(max_inputs=1000, max_input_tokens=32_000, max_request_tokens=120_000), 1024, 0.18),
    "gemini": (RequestLimits(max_inputs=100, max_input_tokens=2048, max_request_tokens=204_800), 3072, 0.15),
    "cohere": (RequestLimits(max_inputs=96, max_input_tokens=128_000, max_request_tokens=12_288_000), 1536, 0.12),
    "mistral": (RequestLimits(max_inputs=512, max_input_tokens=8192, max_request_tokens=16_384), 1536, 0.15),
}
# The field that carries the input type, and its value for a document and for a query (None: no such field).
INPUT_FIELD: dict[Flavour, tuple[str, str, str] | None] = {
    "voyage": ("input_type", "document", "query"),
    "gemini": ("taskType", "RETRIEVAL_DOCUMENT", "CODE_RETRIEVAL_QUERY"),
    "cohere": ("input_type", "search_document", "search_query"),
    "mistral": None,
}


CLASSES: dict[Flavour, type[VendorProvider]] = {
    "voyage": VoyageProvider,
    "gemini": GeminiProvider,
    "cohere": CohereProvider,
    "mistral": MistralProvider,
}


class WordTokenizer(Utf8ByteEstimate):
    """Counts one token per word, as the loopback bills, so limit tests are exact."""

    name = "words"
    exact = True

    def count(self, text: str) -> int:
        return words(text)


def texts(n: int) -> list[str]:
    return [f"def handler_{i}(event): return event.id + {i}" for i in range(n)]


def provider(
    server: LoopbackVendor, clock: FakeClock | None = None, *, key: str | None = KEY, **options: Any
) -> VendorProvider:
    cls = CLASSES[server.flavour]
    clock = clock or FakeClock()
    defaults = VendorOptions(limits=cls.vendor.ceiling(), base_url=server.base_url, dimensions=server.dimensions)
    return cls(
        options=replace(defaults, **options),
        api_key=key,
        tokenizer=WordTokenizer(),
        clock=clock,
        sleep=clock.sleep,
    )


def body_texts(flavour: Flavour, body: dict[str, Any]) -> list[str]:
    if flavour == "gemini":
        return [request["content"]["parts"][0]["text"] for request in body["requests"]]
    return list(body["texts" if flavour == "cohere" else "input"])


def input_word(flavour: Flavour, body: dict[str, Any]) -> str | None:
    if flavour == "gemini":
        [word] = {request.get("taskType") for request in body["requests"]}
        return word
    return body.get("input_type")


@pytest.fixture(params=FLAVOURS)
def server(request: pytest.FixtureRequest) -> Iterator[LoopbackVendor]:
    with LoopbackVendor(request.param, dimensions=SMALLEST[request.param]) as loopback:
        yield loopback


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[Callable[..., EmbeddingService]]:
    made: list[EmbeddingService] = []

    def build(env: dict[str, str], **settings: Any) -> EmbeddingService:
        base = Settings.from_env({"SIGNAL_HUB_DATA_DIR": str(tmp_path), **env})
        made.append(EmbeddingService(settings=replace(base, **settings)))
        return made[-1]

    yield build
    for service in made:
        await service.aclose()


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


async def test_each_sends_its_key_header_and_its_input_type_word_and_returns_the_vectors(
    server: LoopbackVendor,
) -> None:
    embedder = provider(server)
    chunks = texts(3)
    try:
        with anyio.fail_after(WAIT):
            documents = await embedder.embed(chunks)
            queries = await embedder.embed(chunks[:1], input_type="query")
    finally:
        await embedder.aclose()
    first, second = server.seen
    header = "x-goog-api-key" if server.flavour == "gemini" else "authorization"
    assert first.headers[header] == (KEY if server.flavour == "gemini" else f"Bearer {KEY}")
    assert body_texts(server.flavour, first.body) == chunks
    expected = INPUT_FIELD[server.flavour]
    if expected is None:  # Mistral: no such field is sent (the API refuses unknown fields)
        assert embedder.input_types is False
        assert "input_type" not in first.body and "input_type" not in second.body
        np.testing.assert_allclose(queries.vectors[0], documents.vectors[0], atol=1e-6)
        assert queries.space == documents.space
    else:
        _, document_word, query_word = expected
        assert embedder.input_types is True
        assert (input_word(server.flavour, first.body), input_word(server.flavour, second.body)) == (
            document_word,
            query_word,
        )
        assert queries.space.endswith(":query") and documents.space.endswith(":document")
        np.testing.assert_allclose(
            queries.vectors[0], unit(vector_for(chunks[0], query_word, server.dimensions)), atol=1e-6
        )
    word = None if expected is None else expected[1]
    np.testing.assert_allclose(
        documents.vectors, [unit(vector_for(t, word, server.dimensions)) for t in chunks], atol=1e-6
    )


async def test_usage_comes_from_the_answer_and_where_there_is_none_it_is_our_estimate_marked_so(
    server: LoopbackVendor,
) -> None:
    embedder = provider(server)
    chunks = texts(4)
    try:
        with anyio.fail_after(WAIT):
            result = await embedder.embed(chunks)
    finally:
        await embedder.aclose()
    assert result.tokens == sum(words(t) for t in chunks)
    assert result.tokens_estimated is (server.flavour == "gemini")  # the Gemini API reports no usage
    _, _, price = DOCUMENTED[server.flavour]
    assert result.cost_usd == pytest.approx(result.tokens * price / 1e6)


async def test_the_documented_limits_pack_the_requests(server: LoopbackVendor) -> None:
    limits, length, _ = DOCUMENTED[server.flavour]
    embedder = provider(server)
    assert embedder.limits() == limits
    default = provider(server, dimensions=None)
    assert default.dimensions == length
    over = limits.max_inputs + 1
    try:
        with anyio.fail_after(WAIT * 3):
            result = await embedder.embed(["x"] * over)
    finally:
        await embedder.aclose()
    sizes = [len(body_texts(server.flavour, seen.body)) for seen in server.seen]
    assert sum(sizes) == over and max(sizes) <= limits.max_inputs and server.statuses == [200] * len(sizes)
    assert result.count == over


async def test_a_request_the_vendor_finds_too_large_is_sent_again_in_halves(server: LoopbackVendor) -> None:
    server.max_inputs = 4  # a lower limit than documented: the vendor's own 400 message must be understood
    embedder = provider(server)
    try:
        with anyio.fail_after(WAIT):
            result = await embedder.embed(texts(8))
    finally:
        await embedder.aclose()
    assert server.statuses == [400, 200, 200]
    assert result.count == 8


async def test_mistral_over_its_token_limit_is_split_and_its_rate_limit_headers_teach_the_pacer() -> None:
    with LoopbackVendor("mistral", dimensions=8, max_tokens=40) as server:
        embedder = provider(server)
        try:
            with anyio.fail_after(WAIT):
                result = await embedder.embed(texts(8))  # 8 words each: 64 tokens, over the loopback's 40
        finally:
            await embedder.aclose()
    assert server.statuses[0] == 400 and set(server.statuses[1:]) == {200}
    assert result.count == 8
    assert embedder.limiter.tpm == MISTRAL_LIMIT_TOKENS and embedder.limiter.rpm == 720


async def test_a_429_is_retried_after_the_wait_the_vendor_asks_for(server: LoopbackVendor) -> None:
    clock = FakeClock()
    embedder = provider(server, clock)
    server.inject("429")
    try:
        with anyio.fail_after(WAIT):
            result = await embedder.embed(texts(2))
    finally:
        await embedder.aclose()
    assert server.statuses == [429, 200] and result.count == 2
    if server.flavour == "gemini":  # RetryInfo.retryDelay "7s", in the body
        assert 7.0 in clock.sleeps
    else:  # no hint: backoff with jitter (the engine's first wait is 0.25-0.5 s)
        assert clock.sleeps and 0 < max(clock.sleeps) <= 0.5


@pytest.mark.parametrize("fault", ["quota", "500"])
async def test_an_error_body_becomes_our_error_with_the_vendors_message(server: LoopbackVendor, fault: Any) -> None:
    for _ in range(6):
        server.inject(fault)
    embedder = provider(server, max_attempts=2)
    try:
        with (
            anyio.fail_after(WAIT),
            pytest.raises(QuotaExceededError if fault == "quota" else ProviderUnavailableError) as caught,
        ):
            await embedder.embed(texts(1))
    finally:
        await embedder.aclose()
    message = str(caught.value)
    assert server.seen[0].status in (402, 429, 500)
    said = {"voyage": "payment method", "gemini": "quota", "cohere": "Trial key", "mistral": "Payment"}
    assert (said[server.flavour] if fault == "quota" else "nternal") in message


async def test_a_wrong_key_is_refused_naming_its_variable_and_never_echoed(server: LoopbackVendor) -> None:
    wrong = "wrong-key-42"
    embedder = provider(server, key=wrong)
    try:
        with anyio.fail_after(WAIT), pytest.raises(AuthenticationError) as caught:
            await embedder.embed(texts(1))
    finally:
        await embedder.aclose()
    assert KEY_VARIABLES[server.flavour] in str(caught.value) and wrong not in str(caught.value)
    assert len(server.seen) == 1  # a refused key is not retried


BREAKS = {  # one invalid request per vendor, and the words its answer says it in
    "voyage": (lambda body: {**body, "input_type": "both"}, "'input_type' is not valid"),
    "gemini": (lambda body: {"requests": [{**r, "taskType": "BOTH"} for r in body["requests"]]}, "taskType"),
    "cohere": (lambda body: {k: v for k, v in body.items() if k != "input_type"}, "input_type is required"),
    "mistral": (lambda body: {**body, "input_type": "query"}, "Extra inputs are not permitted"),
}


async def test_an_invalid_request_is_an_input_error_in_the_vendors_words(server: LoopbackVendor) -> None:
    embedder = provider(server)
    payload = embedder._payload
    broken, words_said = BREAKS[server.flavour]

    def invalid(texts: list[str], input_type: Any) -> tuple[str, dict[str, Any]]:
        path, body = payload(texts, input_type)
        return path, broken(body)

    embedder._payload = invalid  # type: ignore[method-assign]
    try:
        with anyio.fail_after(WAIT), pytest.raises(InputError, match=words_said):
            await embedder.embed(texts(1))
    finally:
        await embedder.aclose()
    assert server.statuses == [400] or server.statuses == [422]


async def test_without_a_key_it_names_the_variable_and_a_malformed_one_is_refused_at_start(
    server: LoopbackVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = KEY_VARIABLES[server.flavour]
    monkeypatch.delenv(variable, raising=False)
    embedder = provider(server, key=None)
    with anyio.fail_after(WAIT), pytest.raises(AuthenticationError, match=variable):
        await embedder.embed(texts(1))
    assert server.seen == []
    monkeypatch.setenv(variable, "abc\n")
    with pytest.raises(ConfigurationError, match=f"{variable} contains a newline"):
        provider(server, key=None).check()
    monkeypatch.setenv(variable, KEY)
    from_env = provider(server, key=None)
    try:
        with anyio.fail_after(WAIT):
            assert (await from_env.embed(texts(1))).count == 1
    finally:
        await from_env.aclose()


async def test_the_service_reads_its_variables_and_prices_can_be_overridden(
    server: LoopbackVendor, make_service: Callable[..., EmbeddingService], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = server.flavour
    prefix = f"SIGNAL_HUB_{name.upper()}"
    monkeypatch.setenv(KEY_VARIABLES[name], KEY)
    env = {
        "SIGNAL_HUB_PROVIDER": name,
        f"{prefix}_BASE_URL": server.base_url,
        f"{prefix}_DIMENSIONS": str(server.dimensions),
    }
    service = make_service({**env, "SIGNAL_HUB_PRICES": f"{provider(server).model}=1.5"})
    with anyio.fail_after(WAIT):
        result = await service.embed(texts(2))
    assert result.provider == name and result.dimensions == server.dimensions
    assert result.cost_usd == pytest.approx(result.tokens * 1.5 / 1e6)
    if name != "gemini":  # Gemini takes the length in outputDimensionality, per request
        assert server.seen[0].body["output_dimension"] == server.dimensions
    else:
        assert server.seen[0].body["requests"][0]["outputDimensionality"] == server.dimensions
    _, _, price = DOCUMENTED[name]
    assert price_per_million(name, provider(server).model) == price


def test_bad_variables_are_refused_at_start_naming_them() -> None:
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_VOYAGE_BASE_URL must be an http"):
        Settings.from_env({"SIGNAL_HUB_VOYAGE_BASE_URL": "api.voyageai.com"})
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_COHERE_MAX_INPUTS must be a positive integer"):
        Settings.from_env({"SIGNAL_HUB_COHERE_MAX_INPUTS": "lots"})
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_GEMINI_MODEL"):
        PROVIDER_FACTORIES["gemini"](Settings.from_env({"SIGNAL_HUB_GEMINI_MODEL": "text-embedding-004"}), None, None)
    with pytest.raises(ConfigurationError, match="makes 256, 512, 2048 or 1024-dimension vectors, not 300"):
        PROVIDER_FACTORIES["voyage"](Settings(), None, 300)
    voyage = Settings.from_env({"SIGNAL_HUB_VOYAGE_MAX_INPUTS": "10"})
    built = PROVIDER_FACTORIES["voyage"](voyage, None, None)
    assert isinstance(built, VendorProvider) and built.limits().max_inputs == 10  # lowered, never raised
    assert built.options.rpm == 2000 and built.options.tpm == 3_000_000  # Voyage's documented first tier


async def test_an_unreachable_vendor_falls_back_and_opens_its_circuit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COHERE_API_KEY", KEY)
    fake = FakeProvider(name="fake")
    factories = {"cohere": PROVIDER_FACTORIES["cohere"], "fake": lambda s, m, d: fake}
    with socket_without_listener() as port:
        env = {"SIGNAL_HUB_COHERE_BASE_URL": f"http://127.0.0.1:{port}/v2", "SIGNAL_HUB_DATA_DIR": str(tmp_path)}
        settings = replace(
            Settings.from_env(env), fallback=FallbackPolicy(chain=("cohere", "fake"), failure_threshold=1)
        )
        service = EmbeddingService("cohere", settings=settings, factories=factories)
        try:
            with anyio.fail_after(WAIT):
                result = await service.embed(texts(2))
            circuits = {s.name: s.circuit for s in service.provider_statuses()}
        finally:
            await service.aclose()
    assert result.provider == "fake" and result.fallback
    assert "Cohere" in (result.fallback_reason or "") and "connection refused" in (result.fallback_reason or "")
    assert circuits["cohere"] == "open"


async def test_a_429_that_never_ends_is_a_rate_limit_error_naming_the_pacing_variables(server: LoopbackVendor) -> None:
    for _ in range(3):
        server.inject("429")
    embedder = provider(server, max_attempts=3)
    try:
        with anyio.fail_after(WAIT), pytest.raises(RateLimitError, match=f"SIGNAL_HUB_{server.flavour.upper()}_RPM"):
            await embedder.embed(texts(1))
    finally:
        await embedder.aclose()
    assert server.statuses == [429, 429, 429]


async def test_a_wrong_base_url_says_which_variables_to_check(server: LoopbackVendor) -> None:
    embedder = provider(server, base_url=server.base_url.rsplit("/", 1)[0] + "/nowhere")
    try:
        with anyio.fail_after(WAIT), pytest.raises(ConfigurationError, match="_BASE_URL"):
            await embedder.embed(texts(1))
    finally:
        await embedder.aclose()


@pytest.mark.parametrize("fault", ["garbage", "not json", "bad gzip"])
async def test_an_answer_without_vectors_keeps_nothing(server: LoopbackVendor, fault: Any) -> None:
    server.inject(fault)
    embedder = provider(server, max_attempts=1)
    try:
        with anyio.fail_after(WAIT), pytest.raises(ProviderError, match=r"nothing was kept|not JSON|could not be read"):
            await embedder.embed(texts(2))
    finally:
        await embedder.aclose()


async def test_an_answer_over_the_size_cap_is_dropped_not_held(server: LoopbackVendor) -> None:
    server.inject("huge")
    embedder = provider(server)
    try:
        with anyio.fail_after(WAIT), pytest.raises(ProviderError, match=r"could not be read.*more than"):
            await embedder.embed(texts(1))
    finally:
        await embedder.aclose()
    assert len(server.seen) == 1  # not retried


async def test_rank_texts_over_mcp_sends_the_query_as_a_query_and_the_texts_as_documents(
    server: LoopbackVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp import Client

    from server import build_server

    name = server.flavour
    prefix = f"SIGNAL_HUB_{name.upper()}"
    monkeypatch.setenv(KEY_VARIABLES[name], KEY)
    settings = Settings.from_env(
        {
            "SIGNAL_HUB_PROVIDER": name,
            "SIGNAL_HUB_DATA_DIR": str(tmp_path),
            f"{prefix}_BASE_URL": server.base_url,
            f"{prefix}_DIMENSIONS": str(server.dimensions),
        }
    )
    chunks = texts(3)
    async with Client(build_server(settings)) as client:
        with anyio.fail_after(WAIT):
            result = await client.call_tool("rank_texts", {"query": "handler of event 1", "texts": chunks})
            listed = await client.call_tool("list_providers", {})
    assert not result.is_error, result.content
    providers = {entry["provider"]: entry for entry in (listed.structured_content or {})["providers"]}
    assert providers[name]["input_types"] is (INPUT_FIELD[name] is not None)  # Mistral says false
    content = result.structured_content or {}
    assert content["candidates"] == 3 and not content["fallback"]
    expected = INPUT_FIELD[name]
    if expected is None:  # one request: without input types, the query is embedded with the texts
        [seen] = server.seen
        assert "handler of event 1" in body_texts(name, seen.body) and "input_type" not in seen.body
        return
    sent = {input_word(name, seen.body): body_texts(name, seen.body) for seen in server.seen}
    assert sent == {expected[1]: chunks, expected[2]: ["handler of event 1"]}


async def test_a_one_length_model_is_never_sent_a_length() -> None:
    with LoopbackVendor("mistral", dimensions=1024) as server:
        embedder = provider(server, model="mistral-embed", dimensions=1024)
        try:
            with anyio.fail_after(WAIT):
                assert (await embedder.embed(texts(1))).dimensions == 1024
        finally:
            await embedder.aclose()
    assert "output_dimension" not in server.seen[0].body
    with pytest.raises(ConfigurationError, match="makes 1024-dimension vectors, not 512"):
        provider(server, model="mistral-embed", dimensions=512)


def test_a_timeout_counts_towards_timeout_attempts_and_a_refusal_towards_refused_attempts() -> None:
    from providers.remote.http_json import classify_http

    timed_out = classify_http(httpx2.ReadTimeout("no answer"))
    refused = classify_http(httpx2.ConnectError("[Errno 111] Connection refused"))
    assert timed_out is not None and timed_out.retry and timed_out.timed_out and not timed_out.refused
    assert refused is not None and refused.retry and refused.refused and not refused.timed_out
    assert classify_http(ValueError("a bug")) is None  # raised as it is
