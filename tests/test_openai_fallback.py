"""Fallback with the real providers: the OpenAI provider against the loopback server, the packaged local model.

The OpenAI provider's retries sleep on a fake clock, which is also the circuit breaker's clock,
so outages, cool-downs and recoveries take no real time. The only real wait is loading the local
model (its ONNX export is shared with test_local, made once per test session).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from providers import ConfigurationError, EmbeddingProvider, EmbeddingService, Settings
from providers.errors import ProviderUnavailableError, QuotaExceededError
from providers.fallback import FallbackPolicy
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.batching import RequestLimits
from providers.service.facade import PROVIDER_FACTORIES
from providers.text.tokens import Utf8ByteEstimate
from server import build_server
from tests.loopback_openai import LoopbackOpenAI, count_tokens, embedding_for
from tests.test_openai_provider import KEY, FakeClock, LoopbackTokenizer

pytestmark = pytest.mark.anyio
KNOWN_RPM = 1_000_000.0

WAIT = 60  # seconds any one test may take (the first local model load exports it to ONNX)
OPENAI_SPACE = "openai:text-embedding-3-small:1536:l2"
LOCAL_SPACE = "local:all-MiniLM-L6-v2:384:l2"
ATTEMPTS = 2  # per OpenAI request, the first included
COOLDOWN = 60.0
THRESHOLD = 2


def texts(n: int, prefix: str = "def handler") -> list[str]:
    return [f"{prefix}_{i}(event): return event.id + {i}" for i in range(n)]


def text_of(result: CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


def openai_vectors(items: list[str], dimensions: int | None = None) -> np.ndarray:
    return np.stack([embedding_for(item, "text-embedding-3-small", dimensions) for item in items])


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as loopback:
        yield loopback


@pytest.fixture(scope="session")
def local_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same directory as test_local's: the ONNX export of the packaged model is made once.
    return tmp_path_factory.getbasetemp() / "local-models"


@dataclass
class Rig:
    """A service over the real providers, the loopback server behind OpenAI, and the shared fake clock."""

    service: EmbeddingService
    server: LoopbackOpenAI
    clock: FakeClock
    built: list[str] = field(default_factory=list)

    def circuit(self, name: str = "openai") -> str:
        return {status.name: status.circuit for status in self.service.provider_statuses()}[name]

    def let_cooldown_pass(self) -> None:
        self.clock.now += COOLDOWN + 0.5


@pytest.fixture
async def make_rig(
    settings: Settings, server: LoopbackOpenAI, local_data_dir: Path
) -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(api_key: str | None = KEY, **policy: Any) -> Rig:
        clock = FakeClock()
        rig_settings = replace(
            settings,
            provider="openai",
            openai_base_url=server.base_url,
            openai_api_key=api_key,
            fallback=FallbackPolicy(**{"failure_threshold": THRESHOLD, "cooldown_s": COOLDOWN, **policy}),
        )
        built: list[str] = []

        def openai_factory(s: Settings, model: str | None, dimensions: int | None) -> EmbeddingProvider:
            built.append("openai")
            options = OpenAIOptions(
                dimensions=dimensions,
                limits=RequestLimits(max_inputs=2),  # several requests per call
                concurrency=1,  # requests leave in order: which ones fail is known
                max_attempts=ATTEMPTS,
                request_timeout=5.0,
            )
            return OpenAIProvider(
                model or s.openai_model,
                api_key=s.openai_api_key,
                base_url=s.openai_base_url,
                options=options,
                tokenizer=LoopbackTokenizer(),
                clock=clock,
                sleep=clock.sleep,
            )

        def local_factory(s: Settings, model: str | None, dimensions: int | None) -> EmbeddingProvider:
            built.append("local")
            return PROVIDER_FACTORIES["local"](replace(s, data_dir=local_data_dir), model, dimensions)

        factories = {"openai": openai_factory, "local": local_factory}
        service = EmbeddingService(settings=rig_settings, factories=factories, now=clock)
        rigs.append(Rig(service, server, clock, built))
        return rigs[-1]

    yield build
    for rig in rigs:
        await rig.service.aclose()


# the provider keeps what it was paid for


async def test_a_call_failing_midway_carries_the_paid_vectors_in_its_error(server: LoopbackOpenAI) -> None:
    clock = FakeClock()
    provider = OpenAIProvider(
        api_key=KEY,
        base_url=server.base_url,
        options=OpenAIOptions(limits=RequestLimits(max_inputs=2), concurrency=1),
        tokenizer=LoopbackTokenizer(),
        clock=clock,
        sleep=clock.sleep,
    )
    items = texts(6)
    server.inject("shuffle", times=2)  # two answers (out of index order, put back by index)...
    server.inject("insufficient_quota")  # ...then the account runs dry
    try:
        with anyio.fail_after(WAIT), pytest.raises(QuotaExceededError, match="no credit left") as raised:
            await provider.embed(items)
    finally:
        await provider.aclose()
    error = raised.value
    assert error.partial is not None and error.partial_indexes == (0, 1, 2, 3)
    np.testing.assert_allclose(error.partial.vectors, openai_vectors(items[:4]), atol=1e-6)
    assert error.partial.requests == 2 and server.request_count == 3  # the refused request is not billed
    assert error.partial.tokens == server.tokens_served == sum(count_tokens(t) for t in items[:4])
    assert error.partial.cost_usd == pytest.approx(error.partial.tokens * 0.02 / 1e6)


async def test_the_paid_vectors_are_named_by_position_when_they_are_not_a_prefix() -> None:
    # Two requests in flight: the first to arrive hangs, the other and the next one finish,
    # then the hung one is dropped. Whichever hung, the kept texts are not a prefix of the call.
    items = ["short one", "short two", "word " * 200]  # the last is cut to 50 tokens
    clock = FakeClock()
    with LoopbackOpenAI(api_key=KEY) as own:
        provider = OpenAIProvider(
            api_key=KEY,
            base_url=own.base_url,
            options=OpenAIOptions(
                limits=RequestLimits(max_inputs=1, max_input_tokens=50, max_request_tokens=1000),
                concurrency=2,
                max_attempts=1,
                rpm=KNOWN_RPM,
            ),
            tokenizer=Utf8ByteEstimate(),
            clock=clock,
            sleep=clock.sleep,
        )
        own.inject("hang")
        raised: list[ProviderUnavailableError] = []

        async def embed() -> None:
            try:
                await provider.embed(items)
            except ProviderUnavailableError as exc:
                raised.append(exc)

        try:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as group:
                    group.start_soon(embed)
                    while own.hung_count < 1 or own.inputs_embedded < 2:
                        await anyio.sleep(0.01)
                    hung = next(items.index(str(r.inputs[0])) for r in own.requests if r.fault == "hang")
                    own.close()  # the hung request's connection is dropped
        finally:
            await provider.aclose()
    [error] = raised
    assert "could not be reached" in str(error)
    kept = tuple(i for i in range(3) if i != hung)
    assert error.partial is not None and error.partial_indexes == kept
    sent = [items[0], items[1], items[2][:50]]
    np.testing.assert_allclose(error.partial.vectors, openai_vectors([sent[i] for i in kept]), atol=1e-6)
    # The cut text is the second kept one: `truncated` counts positions within `partial_indexes`.
    assert error.partial.truncated == {1: 950}


def _two_in_flight(base_url: str, finish_in_flight: float) -> OpenAIProvider:
    clock = FakeClock()
    options = OpenAIOptions(
        limits=RequestLimits(max_inputs=1),
        concurrency=2,
        max_attempts=1,
        finish_in_flight=finish_in_flight,
        rpm=KNOWN_RPM,  # a known limit: the first request need not go alone to learn one
    )
    return OpenAIProvider(
        api_key=KEY, base_url=base_url, options=options, tokenizer=LoopbackTokenizer(), clock=clock, sleep=clock.sleep
    )


async def test_a_request_in_flight_when_another_fails_is_kept_and_nothing_new_is_sent() -> None:
    items = texts(3)
    # Answers take 0.3 s; the refusal of the first request to arrive comes at once.
    with LoopbackOpenAI(api_key=KEY, latency=0.3) as own:
        provider = _two_in_flight(own.base_url, finish_in_flight=WAIT)
        own.inject("insufficient_quota")
        try:
            with anyio.fail_after(WAIT), pytest.raises(QuotaExceededError) as raised:
                await provider.embed(items)
        finally:
            await provider.aclose()
        refused, answered = (items.index(str(r.inputs[0])) for r in sorted(own.requests, key=lambda r: not r.fault))
    error = raised.value
    assert {refused, answered} == {0, 1} and own.request_count == 2  # the third text was never sent
    assert error.partial is not None and error.partial_indexes == (answered,)
    np.testing.assert_allclose(error.partial.vectors, openai_vectors([items[answered]]), atol=1e-6)
    assert error.partial.requests == 1 and error.partial.tokens == count_tokens(items[answered])


async def test_a_hung_request_is_given_up_when_the_time_to_finish_runs_out() -> None:
    with LoopbackOpenAI(api_key=KEY) as own:
        provider = _two_in_flight(own.base_url, finish_in_flight=0.2)
        own.inject("hang")
        own.inject("insufficient_quota")
        try:
            with anyio.fail_after(WAIT), pytest.raises(QuotaExceededError) as raised:
                await provider.embed(texts(2))
            assert own.hung_count == 1  # still hanging at the server: the call did not wait for it
        finally:
            own.release_hung()
            await provider.aclose()
    assert raised.value.partial is None


async def test_a_failure_before_any_answer_carries_nothing(server: LoopbackOpenAI) -> None:
    provider = OpenAIProvider(api_key=KEY, base_url=server.base_url, tokenizer=LoopbackTokenizer())
    server.inject("insufficient_quota")
    try:
        with anyio.fail_after(WAIT), pytest.raises(QuotaExceededError) as raised:
            await provider.embed(texts(3))
    finally:
        await provider.aclose()
    assert raised.value.partial is None and raised.value.partial_indexes == ()


# the service: one vector space per answer


@pytest.mark.slow
async def test_no_credit_falls_back_to_local_at_once_without_a_retry(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    items = ["def calculate_total(items):", "SELECT * FROM users"]
    rig.server.inject("insufficient_quota", retry_after_ms=10)
    with anyio.fail_after(WAIT):
        result = await rig.service.embed(items)
    assert rig.server.request_count == 1  # no credit: retrying cannot help
    assert (result.provider, result.dimensions, result.space) == ("local", 384, LOCAL_SPACE)
    assert result.fallback and result.requested_space == OPENAI_SPACE
    assert "openai failed: the OpenAI account has no credit left" in (result.fallback_reason or "")
    with anyio.fail_after(WAIT):
        alone = await rig.service.get_provider("local").embed(items)
    np.testing.assert_allclose(result.vectors, alone.vectors, atol=1e-5)
    assert rig.circuit() == "open"  # at once, not after THRESHOLD failures

    with anyio.fail_after(WAIT):
        again = await rig.service.embed(["import numpy as np"])
    assert again.fallback and "unavailable after repeated failures" in (again.fallback_reason or "")
    assert "QuotaExceededError" in (again.fallback_reason or "")
    assert rig.server.request_count == 1  # the open circuit kept the call away from OpenAI


@pytest.mark.slow
async def test_a_missing_key_is_answered_by_local_with_the_reason_saying_to_set_it(
    make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rig = make_rig(api_key=None)
    with anyio.fail_after(WAIT):
        result = await rig.service.embed(["x = 1"])
    assert result.fallback and (result.space, result.requested_space) == (LOCAL_SPACE, OPENAI_SPACE)
    assert "no OpenAI API key: set OPENAI_API_KEY" in (result.fallback_reason or "")
    assert rig.server.request_count == 0 and rig.circuit() == "open"


@pytest.mark.slow
async def test_an_outage_opens_the_circuit_after_the_threshold_and_then_openai_is_not_called(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.server.inject("503", times=THRESHOLD * ATTEMPTS)
    for n in range(THRESHOLD):
        assert rig.circuit() == "closed"
        with anyio.fail_after(WAIT):
            result = await rig.service.embed(texts(1, f"outage_{n}"))
        assert result.fallback and result.space == LOCAL_SPACE and result.requested_space == OPENAI_SPACE
        assert f"OpenAI answered 503 after {ATTEMPTS} attempts" in (result.fallback_reason or "")
    assert rig.server.request_count == THRESHOLD * ATTEMPTS  # each call retried to the bound
    status = {s.name: s for s in rig.service.provider_statuses()}["openai"]
    assert status.circuit == "open" and status.retry_in_s == COOLDOWN
    assert "ProviderUnavailableError" in (status.last_error or "") and "503" in (status.last_error or "")

    for n in range(3):
        with anyio.fail_after(WAIT):
            skipped = await rig.service.embed(texts(2, f"while_open_{n}"))
        assert skipped.fallback and skipped.space == LOCAL_SPACE
    assert rig.server.request_count == THRESHOLD * ATTEMPTS  # open: not one more request
    assert "openai" not in rig.service.cost_report().by_provider  # failed requests cost nothing


@pytest.mark.slow
async def test_after_the_cooldown_a_probe_that_works_closes_the_circuit(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.server.inject("insufficient_quota")
    with anyio.fail_after(WAIT):
        assert (await rig.service.embed(["before"])).fallback
    assert rig.circuit() == "open"

    rig.let_cooldown_pass()
    assert rig.circuit() == "half_open"
    rig.server.inject("503", times=ATTEMPTS)  # the first probe finds OpenAI still down...
    with anyio.fail_after(WAIT):
        assert (await rig.service.embed(["first probe"])).fallback
    assert rig.circuit() == "open"  # ...and one failed probe opens the circuit again

    rig.let_cooldown_pass()
    rig.server.reset_counters()
    items = texts(3, "recovered")
    with anyio.fail_after(WAIT):
        recovered = await rig.service.embed(items)
    assert not recovered.fallback and recovered.requested_space is None
    assert (recovered.provider, recovered.space) == ("openai", OPENAI_SPACE)
    np.testing.assert_allclose(recovered.vectors, openai_vectors(items), atol=1e-6)
    assert rig.server.embedded_inputs() == items
    assert rig.circuit() == "closed"
    with anyio.fail_after(WAIT):
        assert (await rig.service.embed(["after"])).space == OPENAI_SPACE


@pytest.mark.slow
async def test_a_failure_midway_answers_from_one_space_and_what_was_paid_is_never_paid_again(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    with anyio.fail_after(WAIT):
        earlier = await rig.service.embed(["known_a = 1", "known_b = 2"])  # cached in OpenAI's space
    assert earlier.space == OPENAI_SPACE
    rig.server.reset_counters()

    # Two texts are cached, one repeats: OpenAI is sent the 6 others, two per request.
    items = ["fresh_0 = 0", "known_a = 1", "fresh_1 = 1", "fresh_2 = 2", "fresh_0 = 0"]
    items += ["fresh_3 = 3", "known_b = 2", "fresh_4 = 4", "fresh_5 = 5"]
    fresh = list(dict.fromkeys(t for t in items if t.startswith("fresh")))
    rig.server.inject("shuffle", times=2)  # the first two requests are answered (and billed)...
    rig.server.inject("503", times=ATTEMPTS)  # ...the third fails past the retry bound
    with anyio.fail_after(WAIT):
        result = await rig.service.embed(items)

    # The whole answer comes from the local model: not one OpenAI vector, not even the cached ones.
    assert (result.provider, result.space, result.vectors.shape) == ("local", LOCAL_SPACE, (9, 384))
    assert result.fallback and result.requested_space == OPENAI_SPACE and result.cached == 0
    with anyio.fail_after(WAIT):
        alone = await rig.service.get_provider("local").embed(items)
    np.testing.assert_allclose(result.vectors, alone.vectors, atol=1e-5)

    paid = fresh[:4]
    assert rig.server.embedded_inputs() == paid
    openai_usage = rig.service.cost_report().by_provider["openai"]
    # The first call and the paid half of this one: tokens as the server billed them.
    assert openai_usage.requests == 1 + 2 and openai_usage.embeddings == 2 + 4
    assert openai_usage.tokens == earlier.tokens + rig.server.tokens_served
    assert openai_usage.usd == pytest.approx(openai_usage.tokens * 0.02 / 1e6)

    assert rig.circuit() == "closed"  # one failure, under the threshold: OpenAI is asked again
    rig.server.reset_counters()
    with anyio.fail_after(WAIT):
        later = await rig.service.embed(items)
    assert not later.fallback and later.space == OPENAI_SPACE
    assert rig.server.embedded_inputs() == fresh[4:]  # only what was never paid for is sent
    # From the cache: the 4 kept from the failed call, the 2 known ones, and fresh_0's repeat.
    assert (later.cached, later.duplicates) == (7, 1)
    np.testing.assert_allclose(later.vectors, openai_vectors(items), atol=1e-6)


@pytest.mark.slow
async def test_a_call_answered_from_the_cache_alone_does_not_count_as_a_working_probe(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    with anyio.fail_after(WAIT):
        await rig.service.embed(["cached = 1"])
    rig.server.inject("insufficient_quota")
    with anyio.fail_after(WAIT):
        assert (await rig.service.embed(["new = 2"])).fallback
    rig.let_cooldown_pass()
    with anyio.fail_after(WAIT):
        hit = await rig.service.embed(["cached = 1"])
    assert hit.space == OPENAI_SPACE and hit.cached == 1  # answered without asking OpenAI...
    assert rig.circuit() == "half_open"  # ...so nothing is known about its health yet


@pytest.mark.slow
async def test_the_never_policy_fails_instead_of_answering_from_local(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(mode="never")
    rig.server.inject("503", times=ATTEMPTS)
    with anyio.fail_after(WAIT), pytest.raises(ProviderUnavailableError, match=f"answered 503 after {ATTEMPTS}"):
        await rig.service.embed(["a = 1"])
    rig.server.inject("insufficient_quota")
    with anyio.fail_after(WAIT), pytest.raises(QuotaExceededError, match="no credit left"):
        await rig.service.embed(["b = 2"])
    requests = rig.server.request_count
    with pytest.raises(ProviderUnavailableError, match="Retry later, or switch_provider to another provider"):
        await rig.service.embed(["c = 3"])
    assert rig.server.request_count == requests  # the open circuit still keeps calls away
    assert "local" not in rig.built  # the local model was never even loaded
    assert rig.service.cost_report().by_provider == {}


# switching


@pytest.mark.slow
@pytest.mark.parametrize(
    ("provider", "model", "dimensions", "message"),
    [
        ("anthropic", None, None, "unknown provider 'anthropic'; choose one of: openai, local"),
        ("/usr/lib/libembed.so", None, None, "unknown provider '/usr/lib/libembed.so'"),
        ("https://evil.example/v1", None, None, "unknown provider 'https://evil.example/v1'"),
        ("local", "/etc/passwd", None, "unknown local model '/etc/passwd'"),
        ("local", "../../models/all-MiniLM-L6-v2", None, "unknown local model"),
        ("local", "https://huggingface.co/evil/model", None, "unknown local model"),
        ("local", None, 256, "makes 384-dimension vectors; it cannot make 256"),
        ("openai", "https://evil.example/v1", None, "unknown OpenAI model 'https://evil.example/v1'"),
        ("openai", "/tmp/text-embedding-3-small", None, "unknown OpenAI model"),
        ("openai", None, 5000, "dimensions must be between 1 and 1536"),
        ("openai", "text-embedding-ada-002", 256, "1536-dimension vectors only"),
    ],
)
async def test_switching_refuses_unknown_names_paths_and_urls_and_changes_nothing(
    make_rig: Callable[..., Rig], provider: str, model: str | None, dimensions: int | None, message: str
) -> None:
    rig = make_rig()
    with pytest.raises(ConfigurationError, match=message):
        rig.service.switch_provider(provider, model, dimensions)
    assert rig.service.provider.space == OPENAI_SPACE
    with anyio.fail_after(WAIT):
        assert (await rig.service.embed(["still = 1"])).space == OPENAI_SPACE


@pytest.mark.slow
async def test_results_carry_the_space_switched_to(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    switched = rig.service.switch_provider("openai", dimensions=256)
    assert (switched.space, switched.previous_space) == ("openai:text-embedding-3-small:256:l2", OPENAI_SPACE)
    with anyio.fail_after(WAIT):
        short = await rig.service.embed(["x = 1"])
    assert short.space == switched.space
    np.testing.assert_allclose(short.vectors, openai_vectors(["x = 1"], 256), atol=1e-6)

    back = rig.service.switch_provider("local")
    assert (back.space, back.previous_space) == (LOCAL_SPACE, switched.space)
    with anyio.fail_after(WAIT):
        local = await rig.service.embed(["x = 1"])
    assert (local.space, local.cached, local.fallback) == (LOCAL_SPACE, 0, False)  # another space, another key


@pytest.mark.slow
async def test_over_mcp_switching_validates_and_answers_name_their_space(
    make_rig: Callable[..., Rig], settings: Settings
) -> None:
    rig = make_rig()
    server = build_server(settings, lambda _: rig.service)
    with anyio.fail_after(WAIT):
        async with Client(server) as client:
            refusals: list[tuple[dict[str, Any], str]] = [
                ({"provider": "/usr/lib/libembed.so"}, "Input should be 'local'"),
                ({"provider": "https://evil.example/v1"}, "Input should be 'local'"),
                ({"provider": "local", "model": "https://huggingface.co/evil/model"}, "unknown local model"),
                ({"provider": "openai", "model": "/tmp/text-embedding-3-small"}, "unknown OpenAI model"),
                ({"provider": "local", "dimensions": 256}, "it cannot make 256"),
            ]
            for arguments, message in refusals:
                refused = await client.call_tool("switch_provider", arguments)
                assert refused.is_error and message in text_of(refused), arguments

            switched = await client.call_tool("switch_provider", {"provider": "openai", "dimensions": 256})
            short_space = "openai:text-embedding-3-small:256:l2"
            assert switched.structured_content["space"] == short_space
            assert switched.structured_content["space_changed"] is True
            answer = (await client.call_tool("embed_text", {"text": "x = 1"})).structured_content
            assert (answer["space"], answer["dimensions"], answer["fallback"]) == (short_space, 256, False)

            rig.server.inject("insufficient_quota")
            fell_back = await client.call_tool("embed_text", {"text": "y = 2"})
            out = fell_back.structured_content
            assert (out["space"], out["dimensions"], out["fallback"]) == (LOCAL_SPACE, 384, True)
            assert out["requested_space"] == short_space and "no credit left" in out["fallback_reason"]
            assert f"not {short_space}" in text_of(fell_back)
            listed = (await client.call_tool("list_providers", {})).structured_content["providers"]
    assert {p["provider"]: p["circuit"] for p in listed} == {"openai": "open", "local": "closed"}
    assert {p["provider"]: p["space"] for p in listed} == {"openai": short_space, "local": LOCAL_SPACE}
