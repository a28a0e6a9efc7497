"""The OpenAI provider through the real SDK against the loopback server (and, for broken answers, a mock transport).

The provider's clock and sleep are fake, so retries and pacing never really wait; the only
real waits are the short request timeouts of the hang tests, each bounded by `anyio.fail_after`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import numpy as np
import pytest

from providers import Settings
from providers import openai as openai_module
from providers.errors import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.batching import RequestLimits
from providers.text.tokens import Utf8ByteEstimate
from tests.loopback_openai import LoopbackOpenAI, count_tokens, embedding_for

KEY = "sk-test-a1b2c3d4e5f6g7h8i9j0-secret"
WAIT = 10  # seconds any one test may take


class FakeClock:
    """Monotonic time that moves only when the provider sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 4))
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class LoopbackTokenizer(Utf8ByteEstimate):
    """Counts like the loopback server, so limits tests are exact; cuts by bytes (never under-counts)."""

    name = "loopback"
    exact = True

    def count(self, text: str) -> int:
        return count_tokens(text)


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as loopback:
        yield loopback


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make(server: LoopbackOpenAI, clock: FakeClock) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    made: list[OpenAIProvider] = []

    def build(model: str = "text-embedding-3-small", *, base_url: str | None = None, **options: Any) -> OpenAIProvider:
        options.setdefault("request_timeout", 5.0)
        api_key = options.pop("api_key", KEY)
        tokenizer = options.pop("tokenizer", None) or LoopbackTokenizer()
        provider = OpenAIProvider(
            model,
            api_key=api_key,
            base_url=base_url or server.base_url,
            options=OpenAIOptions(**options),
            tokenizer=tokenizer,
            clock=clock,
            sleep=clock.sleep,
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def texts(n: int, prefix: str = "def function_number") -> list[str]:
    return [f"{prefix}_{i}(x): return x * {i}" for i in range(n)]


def expected(items: list[str], model: str = "text-embedding-3-small", dimensions: int | None = None) -> np.ndarray:
    return np.stack([embedding_for(item, model, dimensions) for item in items])


def few_per_request(n: int) -> RequestLimits:
    return RequestLimits(max_inputs=n)


def test_public_api_is_pinned() -> None:
    assert openai_module.__all__ == [
        "MODEL_DIMENSIONS",
        "OPENAI_PRICES",
        "OpenAIOptions",
        "OpenAIProvider",
        "openai_options",
    ]


# configuration


def test_unknown_models_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        ConfigurationError, match="text-embedding-3-small, text-embedding-3-large, text-embedding-ada-002"
    ):
        OpenAIProvider("gpt-4o")


@pytest.mark.parametrize(
    ("model", "dimensions"),
    [("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072), ("text-embedding-ada-002", 1536)],
)
def test_each_model_knows_its_dimensions_without_a_request(model: str, dimensions: int) -> None:
    assert OpenAIProvider(model).dimensions == dimensions


def test_shortened_vectors_are_for_the_v3_models_only() -> None:
    assert OpenAIProvider("text-embedding-3-large", options=OpenAIOptions(dimensions=256)).dimensions == 256
    with pytest.raises(ConfigurationError, match="1536-dimension vectors only"):
        OpenAIProvider("text-embedding-ada-002", options=OpenAIOptions(dimensions=256))
    assert OpenAIProvider("text-embedding-ada-002", options=OpenAIOptions(dimensions=1536)).dimensions == 1536
    with pytest.raises(ConfigurationError, match="between 1 and 1536"):
        OpenAIProvider("text-embedding-3-small", options=OpenAIOptions(dimensions=2000))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"max_attempts": 0},
        {"request_timeout": 0},
        {"request_tokens": 100},
        {"tpm": 0},
        {"overlong": "shorten"},
        {"finish_in_flight": -1},
    ],
)
def test_impossible_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        OpenAIOptions(**kwargs)


def test_from_settings_uses_the_configured_model_url_and_key() -> None:
    settings = Settings(
        openai_model="text-embedding-3-large", openai_base_url="http://127.0.0.1:9/v1", openai_api_key=KEY
    )
    provider = OpenAIProvider.from_settings(settings)
    assert (provider.name, provider.model, provider.dimensions) == ("openai", "text-embedding-3-large", 3072)
    assert OpenAIProvider.from_settings(settings, "text-embedding-ada-002").model == "text-embedding-ada-002"
    assert KEY not in repr(provider)


@pytest.mark.anyio
async def test_the_sdk_never_retries_on_its_own(make: Callable[..., OpenAIProvider]) -> None:
    assert make()._client().max_retries == 0


@pytest.mark.anyio
async def test_a_missing_key_says_to_set_openai_api_key(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = make(api_key=None)  # building it needs no key: it is looked up at first use
    with pytest.raises(AuthenticationError, match="set OPENAI_API_KEY"):
        await provider.embed(["x = 1"])
    assert server.request_count == 0


@pytest.mark.anyio
async def test_the_key_is_read_from_the_environment_at_first_use(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = make(api_key=None)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with anyio.fail_after(WAIT):
        assert (await provider.embed(["x = 1"])).count == 1


# results


@pytest.mark.anyio
async def test_vectors_come_back_in_input_order_with_the_reported_usage(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    items = texts(50)
    with anyio.fail_after(WAIT):
        result = await make(limits=few_per_request(7)).embed(items)
    np.testing.assert_allclose(result.vectors, expected(items), atol=1e-6)
    assert result.vectors.dtype == np.float32
    assert (result.provider, result.model, result.dimensions) == ("openai", "text-embedding-3-small", 1536)
    assert result.tokens == server.tokens_served == sum(count_tokens(t) for t in items)
    assert result.requests == server.request_count == 8
    assert result.truncated == {}
    assert result.cost_usd == pytest.approx(result.tokens * 0.02 / 1e6)


@pytest.mark.anyio
async def test_answers_out_of_index_order_are_put_back_by_index(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    items = texts(40)
    server.inject("shuffle", times=4)
    with anyio.fail_after(WAIT):
        result = await make(limits=few_per_request(10)).embed(items)
    assert [record.fault for record in server.requests] == ["shuffle"] * 4
    np.testing.assert_allclose(result.vectors, expected(items), atol=1e-6)


@pytest.mark.anyio
async def test_ada_asked_for_its_own_length_is_not_sent_dimensions(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    with anyio.fail_after(WAIT):
        result = await make("text-embedding-ada-002", dimensions=1536).embed(texts(2))
    np.testing.assert_allclose(result.vectors, expected(texts(2), "text-embedding-ada-002"), atol=1e-6)


@pytest.mark.anyio
@pytest.mark.parametrize("encoding_format", ["base64", "float"])
async def test_shortened_vectors_match_the_server(make: Callable[..., OpenAIProvider], encoding_format: str) -> None:
    items = texts(3)
    provider = make("text-embedding-3-large", dimensions=256, encoding_format=encoding_format)
    with anyio.fail_after(WAIT):
        result = await provider.embed(items)
    np.testing.assert_allclose(result.vectors, expected(items, "text-embedding-3-large", 256), atol=1e-6)


@pytest.mark.anyio
async def test_progress_is_reported_as_requests_complete(make: Callable[..., OpenAIProvider]) -> None:
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    with anyio.fail_after(WAIT):
        await make(limits=few_per_request(4), concurrency=1).embed(texts(10), progress=progress)
    assert seen == [(4, 10), (8, 10), (10, 10)]


@pytest.mark.anyio
async def test_nothing_to_embed_needs_no_key_and_no_request(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = await make(api_key=None).embed([])
    assert result.vectors.shape == (0, 1536) and result.requests == 0 and server.request_count == 0


@pytest.mark.anyio
async def test_a_failing_progress_callback_fails_the_call_with_its_own_error(
    make: Callable[..., OpenAIProvider],
) -> None:
    async def progress(done: int, total: int) -> None:
        raise KeyError("the client went away")

    with anyio.fail_after(WAIT), pytest.raises(KeyError, match="went away"):
        await make(limits=few_per_request(1)).embed(texts(5), progress=progress)


@pytest.mark.anyio
async def test_several_requests_are_in_flight_at_once(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    provider = make(limits=few_per_request(1), concurrency=4)
    with anyio.fail_after(WAIT):
        await provider.embed(["warm"])  # while no limit is known, the first request goes alone
    server.reset_counters()
    server.inject("hang", times=2)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(provider.embed, texts(4))
            # Two requests hang while the other two finish: four were sent without waiting.
            while server.hung_count < 2 or server.inputs_embedded < 2:
                await anyio.sleep(0.01)
            server.release_hung()
    assert server.inputs_embedded == 4


# input checks and over-long texts


@pytest.mark.anyio
async def test_blank_texts_are_refused_by_position_before_any_request(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    with pytest.raises(InputError, match=r"whitespace-only text at positions 1, 3"):
        await make().embed(["a = 1", "", "b = 2", " \n\t"])
    assert server.request_count == 0


@pytest.mark.anyio
async def test_overlong_texts_are_cut_to_fit_and_reported(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    long_text = "word " * 200  # 200 loopback tokens, 1000 bytes
    provider = make(limits=RequestLimits(max_input_tokens=50, max_request_tokens=1000), tokenizer=Utf8ByteEstimate())
    with anyio.fail_after(WAIT):
        result = await provider.embed(["short", long_text])
    assert result.truncated == {1: 950}  # bytes, as the estimate counts them
    sent = server.embedded_inputs()
    assert sent == ["short", long_text[:50]]
    np.testing.assert_allclose(result.vectors, expected(["short", long_text[:50]]), atol=1e-6)


@pytest.mark.anyio
async def test_overlong_texts_can_refuse_the_call_instead(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    provider = make(limits=RequestLimits(max_input_tokens=50, max_request_tokens=1000), overlong="error")
    with pytest.raises(InputError, match="longer than 50 tokens at position 1"):
        await provider.embed(["short", "word " * 200])
    assert server.request_count == 0


@pytest.mark.anyio
async def test_a_text_cut_down_to_whitespace_is_refused(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    provider = make(limits=RequestLimits(max_input_tokens=5, max_request_tokens=100), tokenizer=Utf8ByteEstimate())
    with pytest.raises(InputError, match="after truncation at position 0"):
        await provider.embed(["       x"])
    assert server.request_count == 0


@pytest.mark.anyio
async def test_the_token_estimate_uses_the_tokenizer_and_the_cut(make: Callable[..., OpenAIProvider]) -> None:
    provider = make(limits=RequestLimits(max_input_tokens=50, max_request_tokens=1000), tokenizer=Utf8ByteEstimate())
    assert await provider.estimate_tokens(["abc", "x" * 500]) == 53


@pytest.mark.anyio
async def test_requests_hold_a_small_share_of_the_token_limit(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    items = [f"{i} " + "word " * 249 for i in range(100)]  # 250 tokens each
    with anyio.fail_after(WAIT):
        await make(tpm=320_000).embed(items)  # 10,000 tokens a request
    assert sorted(len(record.inputs) for record in server.requests) == [20, 40, 40]


@pytest.mark.anyio
async def test_without_a_token_limit_requests_stay_mid_sized(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    items = [f"{i} " + "word " * 249 for i in range(300)]
    with anyio.fail_after(WAIT):
        await make().embed(items)
    # A probe of 1,024 tokens goes first and alone (no limit known yet), then 32,768 tokens at most.
    assert sorted(len(record.inputs) for record in server.requests) == [4, 34, 131, 131]


@pytest.mark.anyio
async def test_a_request_an_endpoint_finds_too_large_is_split(make: Callable[..., OpenAIProvider]) -> None:
    items = texts(12)
    with LoopbackOpenAI(api_key=KEY, max_request_tokens=60) as small:  # counts differ from ours
        with anyio.fail_after(WAIT):
            result = await make(base_url=small.base_url).embed(items)
        statuses = [record.status for record in small.requests]
    np.testing.assert_allclose(result.vectors, expected(items), atol=1e-6)
    assert statuses.count(400) == 3 and statuses.count(200) == 4
    assert result.requests == 4


@pytest.mark.anyio
async def test_one_text_too_large_for_the_endpoint_is_an_input_error(make: Callable[..., OpenAIProvider]) -> None:
    with LoopbackOpenAI(api_key=KEY, max_request_tokens=3) as small:
        with pytest.raises(InputError, match="max 3 tokens per request"):
            await make(base_url=small.base_url).embed(texts(1))
        assert small.request_count == 1


# retries


@pytest.mark.anyio
async def test_rate_limited_requests_wait_as_told_then_succeed(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], clock: FakeClock
) -> None:
    server.inject("429", times=2, retry_after_ms=1500)
    with anyio.fail_after(WAIT):
        result = await make().embed(texts(3))
    assert [record.status for record in server.requests] == [429, 429, 200]
    assert clock.sleeps == [1.5, 1.5]  # retry-after-ms honoured; the limiter waited along
    assert result.requests == 1  # billed requests only


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["500", "503", "drop"])
async def test_server_errors_and_dropped_connections_are_retried_with_backoff(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], clock: FakeClock, fault: str
) -> None:
    server.inject(fault, times=2)  # type: ignore[arg-type]
    with anyio.fail_after(WAIT):
        result = await make(backoff_initial=1.0, backoff_max=8.0).embed(texts(3))
    np.testing.assert_allclose(result.vectors, expected(texts(3)), atol=1e-6)
    assert server.request_count == 3
    first, second = clock.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0  # exponential, with jitter


@pytest.mark.anyio
async def test_server_errors_honour_retry_after_when_given(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], clock: FakeClock
) -> None:
    server.inject("503", retry_after_ms=250)
    with anyio.fail_after(WAIT):
        await make().embed(texts(1))
    assert clock.sleeps == [0.25]


@pytest.mark.anyio
async def test_a_hung_request_times_out_and_only_it_is_retried(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    items = texts(6)
    server.inject("shuffle")  # the first request succeeds...
    server.inject("hang")  # ...the second hangs until the client gives up
    with anyio.fail_after(WAIT):
        result = await make(limits=few_per_request(2), concurrency=1, request_timeout=0.3).embed(items)
    np.testing.assert_allclose(result.vectors, expected(items), atol=1e-6)
    assert [r.fault for r in server.requests] == ["shuffle", "hang", None, None]
    assert server.embedded_inputs() == items  # finished requests were not sent again
    assert result.requests == 3


@pytest.mark.anyio
async def test_attempts_are_bounded(server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]) -> None:
    server.inject("500", times=10)
    with pytest.raises(ProviderUnavailableError, match="answered 500 after 3 attempts"):
        await make(max_attempts=3).embed(texts(2))
    assert server.request_count == 3


@pytest.mark.anyio
async def test_rate_limits_that_outlast_the_retries_raise_rate_limit_error(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    server.inject("429", times=10)
    with pytest.raises(RateLimitError, match="after 4 attempts"):
        await make(max_attempts=4).embed(texts(2))
    assert server.request_count == 4


@pytest.mark.anyio
async def test_total_retry_time_is_bounded(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], clock: FakeClock
) -> None:
    server.inject("429", times=10, retry_after_ms=20_000)
    with pytest.raises(RateLimitError, match="after 2 attempts"):
        await make(max_retry_seconds=30).embed(texts(2))
    assert server.request_count == 2 and clock.sleeps == [20.0]  # a third wait would pass 30 s


@pytest.mark.anyio
async def test_repeated_timeouts_end_as_provider_unavailable(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    server.inject("hang", times=2)
    with anyio.fail_after(WAIT), pytest.raises(ProviderUnavailableError, match="did not answer in time after 2"):
        await make(max_attempts=2, request_timeout=0.2).embed(texts(1))


@pytest.mark.anyio
async def test_an_unreachable_endpoint_ends_as_provider_unavailable(make: Callable[..., OpenAIProvider]) -> None:
    with socket_without_listener() as port, pytest.raises(ProviderUnavailableError, match="could not be reached"):
        await make(base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2).embed(texts(1))


@pytest.mark.anyio
async def test_no_credit_is_not_retried(server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]) -> None:
    server.inject("insufficient_quota", retry_after_ms=10)
    with pytest.raises(QuotaExceededError, match="no credit left"):
        await make().embed(texts(2))
    assert server.request_count == 1


@pytest.mark.anyio
async def test_a_wrong_key_is_not_retried_and_never_shown(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-0123456789abcdefghijklmnop"
    provider = make(api_key=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError, match="rejected the API key") as raised:
        await provider.embed(texts(2))
    assert server.request_count == 1
    for shown in (str(raised.value), repr(provider), caplog.text):
        assert wrong not in shown and KEY not in shown


@pytest.mark.anyio
async def test_the_key_is_redacted_even_if_the_endpoint_echoes_it(make: Callable[..., OpenAIProvider]) -> None:
    def echo(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, json={"error": {"message": f"bad key {KEY}", "type": "invalid_request_error"}})

    provider = make()
    provider._http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(echo))
    with pytest.raises(AuthenticationError) as raised:
        await provider.embed(texts(1))
    assert KEY not in str(raised.value) and "[redacted]" in str(raised.value)


@pytest.mark.anyio
async def test_a_successful_call_logs_nothing_of_the_key(
    make: Callable[..., OpenAIProvider], caplog: pytest.LogCaptureFixture, server: LoopbackOpenAI
) -> None:
    caplog.set_level(logging.DEBUG)
    server.inject("500")
    with anyio.fail_after(WAIT):
        result = await make().embed(texts(2))
    assert "retrying" in caplog.text
    assert KEY not in caplog.text and KEY not in repr(result)


@pytest.mark.anyio
async def test_an_unknown_endpoint_path_is_a_configuration_error(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_BASE_URL"):
        await make(base_url=server.base_url + "/nowhere").embed(texts(1))
    assert server.request_count == 1


@pytest.mark.anyio
async def test_a_bad_request_is_an_input_error_and_not_retried(make: Callable[..., OpenAIProvider]) -> None:
    with LoopbackOpenAI(api_key=KEY, max_input_tokens=3) as strict:  # an endpoint with a smaller cap
        with pytest.raises(InputError, match="maximum context length is 3 tokens"):
            await make(base_url=strict.base_url).embed(texts(2))
        assert strict.request_count == 1


@pytest.mark.anyio
async def test_one_failed_request_fails_the_call_and_stops_the_others(
    server: LoopbackOpenAI, make: Callable[..., OpenAIProvider]
) -> None:
    server.inject("insufficient_quota")
    with anyio.fail_after(WAIT), pytest.raises(QuotaExceededError):
        await make(limits=few_per_request(1), concurrency=1).embed(texts(5))
    assert server.request_count == 1


# pacing against the server's own limits


@pytest.mark.anyio
async def test_limits_are_learned_from_the_headers_and_respected() -> None:
    clock = FakeClock()
    with LoopbackOpenAI(api_key=KEY, rpm=5, time_scale=1.0) as limited:
        provider = OpenAIProvider(
            api_key=KEY,
            base_url=limited.base_url,
            options=OpenAIOptions(limits=few_per_request(1), concurrency=1),
            tokenizer=LoopbackTokenizer(),
            clock=clock,
            sleep=clock.sleep,
        )
        with anyio.fail_after(WAIT):
            result = await provider.embed(texts(5))
        await provider.aclose()
    assert provider.limiter.rpm == 5 and result.count == 5 and limited.rate_limited_count == 0
    assert clock.sleeps == []  # five requests fit the server's bucket of five


# broken answers (a mock transport behind the real SDK)


def mock_provider(
    make: Callable[..., OpenAIProvider], answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> OpenAIProvider:
    import json

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=answer(json.loads(request.content)))

    provider = make()
    provider._http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return provider


def vector_b64(values: list[float] | np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def answer_with(*items: tuple[int, object]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        data = [{"object": "embedding", "index": index, "embedding": vector} for index, vector in items]
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }

    return answer


UNIT = vector_b64(np.eye(1536)[0])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("items", "message"),
    [
        (((0, UNIT),), "1 vectors for 2 texts"),
        (((0, UNIT), (0, UNIT)), "index 0"),
        (((0, UNIT), (2, UNIT)), "index 2"),
        (((0, UNIT), (1, vector_b64([1.0] * 10))), "length 10, expected 1536"),
        (((0, UNIT), (1, vector_b64([float("nan")] * 1536))), "NaN"),
        (((0, UNIT), (1, vector_b64([0.0] * 1536))), "all-zero"),
        (((0, UNIT), (1, "AAA")), "not a list of floats or base64"),
        (((0, UNIT), (1, "AAAAAAA=")), "not a list of floats or base64"),
        (((0, UNIT), (1, ["x"])), "not a list of floats or base64"),
        (((0, UNIT), ("1", UNIT)), "index 1"),
    ],
)
async def test_broken_answers_are_refused_before_anyone_sees_them(
    make: Callable[..., OpenAIProvider], items: tuple[tuple[int, object], ...], message: str
) -> None:
    provider = mock_provider(make, answer_with(*items))
    with pytest.raises(ProviderError, match=message):
        await provider.embed(["a = 1", "b = 2"])


@pytest.mark.anyio
async def test_an_answer_without_a_list_of_vectors_is_refused(make: Callable[..., OpenAIProvider]) -> None:
    provider = mock_provider(make, lambda body: {"object": "list", "data": "none", "model": body["model"], "usage": {}})
    with pytest.raises(ProviderError, match="no list of vectors"):
        await provider.embed(["a = 1"])


@pytest.mark.anyio
async def test_a_request_refused_as_too_large_413_is_split(make: Callable[..., OpenAIProvider]) -> None:
    import json

    seen: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        inputs = json.loads(request.content)["input"]
        seen.append(len(inputs))
        if len(inputs) > 1:
            return httpx2.Response(413, json={"error": {"message": "Request Entity Too Large", "type": "server_error"}})
        body = answer_with((0, UNIT))({"model": "text-embedding-3-small"})
        return httpx2.Response(200, json=body)

    provider = make()
    provider._http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    result = await provider.embed(["a = 1", "b = 2", "c = 3"])
    assert seen == [3, 1, 2, 1, 1] and result.requests == 3


@pytest.mark.anyio
async def test_the_default_tokenizer_needs_no_network(server: LoopbackOpenAI) -> None:
    provider = OpenAIProvider(api_key=KEY, base_url=server.base_url)
    try:
        with anyio.fail_after(WAIT):
            result = await provider.embed(texts(3))
        assert await provider.estimate_tokens(["abc"]) in (1, 3)  # cl100k_base, or one per byte
    finally:
        await provider.aclose()
    np.testing.assert_allclose(result.vectors, expected(texts(3)), atol=1e-6)


@pytest.mark.anyio
async def test_float_answers_of_compatible_endpoints_are_normalised(make: Callable[..., OpenAIProvider]) -> None:
    provider = mock_provider(make, answer_with((0, [3.0, 4.0] + [0.0] * 1534)))
    result = await provider.embed(["a = 1"])
    assert result.vectors[0, :2].tolist() == pytest.approx([0.6, 0.8])
    assert result.tokens == 2


def socket_without_listener() -> Any:
    import contextlib
    import socket

    @contextlib.contextmanager
    def reserve() -> Iterator[int]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            yield sock.getsockname()[1]

    return reserve()
