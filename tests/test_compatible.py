"""The `compatible` provider against loopback servers that answer like TEI and like Ollama's OpenAI route."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from providers import ConfigurationError, EmbeddingService, Settings
from providers.compatible import TEI_LIMITS, CompatibleOptions, CompatibleProvider
from providers.errors import AuthenticationError, InputError, ProviderError
from providers.fallback import FallbackPolicy
from providers.registry import provider_names
from providers.service.facade import PROVIDER_FACTORIES
from tests.fakes import FakeProvider
from tests.loopback_compatible import LoopbackCompatible, unit, vector_for, words
from tests.test_openai_provider import FakeClock, LoopbackTokenizer, socket_without_listener

pytestmark = pytest.mark.anyio
WAIT = 10


def texts(n: int, prefix: str = "def handler") -> list[str]:
    return [f"{prefix}_{i}(event): return event.id + {i}" for i in range(n)]


@pytest.fixture
def ollama() -> Iterator[LoopbackCompatible]:
    with LoopbackCompatible("ollama", dimensions=12) as server:
        yield server


@pytest.fixture
def tei() -> Iterator[LoopbackCompatible]:
    with LoopbackCompatible("tei", dimensions=8) as server:
        yield server


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[Callable[..., EmbeddingService]]:
    made: list[EmbeddingService] = []

    def build(env: dict[str, str], **settings: Any) -> EmbeddingService:
        base = Settings.from_env({"SIGNAL_HUB_PROVIDER": "compatible", "SIGNAL_HUB_DATA_DIR": str(tmp_path), **env})
        made.append(EmbeddingService(settings=replace(base, **settings)))
        return made[-1]

    yield build
    for service in made:
        await service.aclose()


def provider(server: LoopbackCompatible, clock: FakeClock | None = None, **options: Any) -> CompatibleProvider:
    clock = clock or FakeClock()
    return CompatibleProvider(
        CompatibleOptions(base_url=server.base_url, model="nomic-embed-text", **options),
        tokenizer=LoopbackTokenizer(),
        clock=clock,
        sleep=clock.sleep,
    )


def test_it_is_registered() -> None:
    assert "compatible" in provider_names()


async def test_two_variables_point_the_server_at_ollama_and_it_embeds(
    ollama: LoopbackCompatible, make_service: Callable[..., EmbeddingService]
) -> None:
    env = {"SIGNAL_HUB_COMPATIBLE_BASE_URL": ollama.base_url, "SIGNAL_HUB_COMPATIBLE_MODEL": "nomic-embed-text"}
    service = make_service(env)
    items = texts(3)
    with anyio.fail_after(WAIT):
        result = await service.embed(items)
    port = ollama.base_url.split(":")[2].split("/")[0]
    assert result.space == f"compatible:127.0.0.1:{port}/nomic-embed-text:12:l2"
    assert service.provider.space == result.space  # learnt from a one-word probe, before the cache was read
    assert [seen.inputs for seen in ollama.requests] == [1, 3]
    np.testing.assert_allclose(result.vectors, np.stack([unit(vector_for(t, 12)) for t in items]), atol=1e-6)
    # Ollama reported no usage: our own count, marked as such, here and in get_cost; self-hosted costs 0.
    assert result.tokens_estimated and result.tokens > 0 and result.cost_usd == 0.0
    report = service.cost_report(scope="all")
    assert report.total.estimated_tokens == report.total.tokens == result.tokens


async def test_usage_is_taken_from_the_server_when_it_reports_it(
    tei: LoopbackCompatible, make_service: Callable[..., EmbeddingService]
) -> None:
    env = {
        "SIGNAL_HUB_COMPATIBLE_BASE_URL": tei.base_url,
        "SIGNAL_HUB_COMPATIBLE_MODEL": "bge-small",
        "SIGNAL_HUB_COMPATIBLE_PRICE": "0.5",
        "SIGNAL_HUB_COMPATIBLE_DIMENSIONS": "8",  # known: no probe request
    }
    with anyio.fail_after(WAIT):
        result = await make_service(env).embed(texts(4))
    assert not result.tokens_estimated and result.tokens == tei.tokens_served
    assert result.cost_usd == pytest.approx(tei.tokens_served * 0.5 / 1e6)


async def test_configured_dimensions_are_checked_and_never_sent(tei: LoopbackCompatible) -> None:
    right, wrong = provider(tei, dimensions=8), provider(tei, dimensions=16)
    try:
        with anyio.fail_after(WAIT):
            assert (await right.embed(texts(2))).dimensions == 8  # TEI would refuse a `dimensions` field
        with anyio.fail_after(WAIT), pytest.raises(ProviderError, match="length 8, expected 16"):
            await wrong.embed(texts(2))
    finally:
        await right.aclose()
        await wrong.aclose()


async def test_learnt_dimensions_are_checked_on_every_later_answer(ollama: LoopbackCompatible) -> None:
    learning = provider(ollama)
    assert learning.dimensions == 0  # unknown until the first answer
    try:
        with anyio.fail_after(WAIT):
            await learning.embed(texts(1))
        assert learning.dimensions == 12
        ollama.dimensions = 24  # someone swapped the model behind the URL
        with anyio.fail_after(WAIT), pytest.raises(ProviderError, match="length 24, expected 12"):
            await learning.embed(texts(1, "other"))
    finally:
        await learning.aclose()


async def test_a_413_over_the_payload_limit_splits_the_request_and_lowers_the_learnt_limit(
    tei: LoopbackCompatible,
) -> None:
    tei.payload_limit = 1_500  # about 20 of these texts
    limited = provider(tei, concurrency=1)
    items = texts(32)
    try:
        with anyio.fail_after(WAIT):
            result = await limited.embed(items)
        np.testing.assert_allclose(result.vectors, np.stack([unit(vector_for(t, 8)) for t in items]), atol=1e-6)
        assert tei.statuses[:3] == [413, 200, 200] and result.requests == 2
        assert limited.limits().max_inputs == 16
        tei.requests.clear()
        with anyio.fail_after(WAIT):
            await limited.embed(texts(32, "again"))
        assert tei.statuses == [200, 200]  # packed within the learnt limit from the start
    finally:
        await limited.aclose()


async def test_batch_too_large_splits_the_request(tei: LoopbackCompatible) -> None:
    greedy = provider(tei, concurrency=1, limits=replace(TEI_LIMITS, max_inputs=64))
    try:
        with anyio.fail_after(WAIT):
            result = await greedy.embed(texts(40))
    finally:
        await greedy.aclose()
    assert tei.statuses == [422, 200, 200] and result.count == 40


async def test_one_text_over_the_payload_limit_is_an_input_error(tei: LoopbackCompatible) -> None:
    tei.payload_limit = 200
    single = provider(tei)
    try:
        with anyio.fail_after(WAIT), pytest.raises(InputError, match="refused one text as too large"):
            await single.embed(["word " * 100])
    finally:
        await single.aclose()


@pytest.mark.parametrize("status", ["429", "503"])
async def test_overload_answers_are_paced_and_retried(tei: LoopbackCompatible, status: Any) -> None:
    clock = FakeClock()
    tei.inject(status)
    patient = provider(tei, clock)
    try:
        with anyio.fail_after(WAIT):
            result = await patient.embed(texts(2))
    finally:
        await patient.aclose()
    assert tei.statuses == [int(status), 200] and result.count == 2
    assert clock.sleeps and clock.sleeps[0] >= 1.0  # the server's retry-after was honoured


async def test_two_servers_or_two_models_never_share_cache_entries(
    tei: LoopbackCompatible, make_service: Callable[..., EmbeddingService]
) -> None:
    items = texts(2)
    with LoopbackCompatible("tei", dimensions=8, seed=1) as other:
        spaces, vectors = [], []
        for url, model in ((tei.base_url, "bge-small"), (other.base_url, "bge-small"), (tei.base_url, "e5")):
            env = {"SIGNAL_HUB_COMPATIBLE_BASE_URL": url, "SIGNAL_HUB_COMPATIBLE_MODEL": model}
            with anyio.fail_after(WAIT):
                result = await make_service(env).embed(items)
            assert result.cached == 0
            spaces.append(result.space)
            vectors.append(result.vectors)
        assert len(set(spaces)) == 3
        assert not np.allclose(vectors[0], vectors[1])
        with anyio.fail_after(WAIT):
            again = await make_service(
                {"SIGNAL_HUB_COMPATIBLE_BASE_URL": other.base_url, "SIGNAL_HUB_COMPATIBLE_MODEL": "bge-small"}
            ).embed(items)
        assert again.cached == 2  # its own space's entries are found
        np.testing.assert_allclose(again.vectors, vectors[1], atol=1e-6)


async def test_a_closed_port_falls_back_and_opens_the_circuit(tmp_path: Path) -> None:
    fake = FakeProvider(name="fake")
    factories = {"compatible": PROVIDER_FACTORIES["compatible"], "fake": lambda s, m, d: fake}
    with socket_without_listener() as port:
        env = {"SIGNAL_HUB_COMPATIBLE_BASE_URL": f"http://127.0.0.1:{port}/v1", "SIGNAL_HUB_COMPATIBLE_MODEL": "m"}
        settings = replace(
            Settings.from_env({**env, "SIGNAL_HUB_DATA_DIR": str(tmp_path)}),
            fallback=FallbackPolicy(chain=("compatible", "fake"), failure_threshold=1),
        )
        service = EmbeddingService("compatible", settings=settings, factories=factories)
        try:
            with anyio.fail_after(WAIT):
                result = await service.embed(texts(2))
            circuits = {s.name: s.circuit for s in service.provider_statuses()}
        finally:
            await service.aclose()
    reason = result.fallback_reason or ""
    assert result.provider == "fake" and result.fallback
    assert f"127.0.0.1:{port}" in reason and "connection refused" in reason
    assert circuits["compatible"] == "open"


def test_settings_are_checked_at_start_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_COMPATIBLE_BASE_URL must be an http"):
        Settings.from_env({"SIGNAL_HUB_COMPATIBLE_BASE_URL": "localhost:8080"})
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_COMPATIBLE_MAX_INPUTS must be a positive integer"):
        Settings.from_env({"SIGNAL_HUB_COMPATIBLE_MAX_INPUTS": "0"})
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_COMPATIBLE_API_KEY contains a newline"):
        Settings.from_env({"SIGNAL_HUB_COMPATIBLE_API_KEY": "abc\n"})


async def test_without_a_base_url_the_provider_says_which_variables_to_set(tmp_path: Path) -> None:
    service = EmbeddingService("local", settings=Settings(data_dir=tmp_path))
    try:
        with pytest.raises(ConfigurationError, match="SIGNAL_HUB_COMPATIBLE_BASE_URL"):
            service.switch_provider("compatible")
    finally:
        await service.aclose()


async def test_a_key_is_sent_when_set(make_service: Callable[..., EmbeddingService]) -> None:
    with LoopbackCompatible("tei", api_key="gateway-key") as gated:
        env = {"SIGNAL_HUB_COMPATIBLE_BASE_URL": gated.base_url, "SIGNAL_HUB_COMPATIBLE_MODEL": "m"}
        with anyio.fail_after(WAIT):
            assert (await make_service({**env, "SIGNAL_HUB_COMPATIBLE_API_KEY": "gateway-key"}).embed(["a b"])).count
        assert gated.statuses == [200, 200]  # the probe that learns the length, then the call
        assert gated.tokens_served == words("dimensions") + words("a b")


async def test_a_wrong_key_or_route_says_which_variable_to_check() -> None:
    with LoopbackCompatible("tei", api_key="right-key") as gated:
        wrong_key = CompatibleProvider(
            CompatibleOptions(base_url=gated.base_url, model="m", api_key="wrong-key", dimensions=8)
        )
        wrong_route = CompatibleProvider(
            CompatibleOptions(base_url=f"{gated.base_url}/nowhere", model="m", api_key="right-key", dimensions=8)
        )
        try:
            with anyio.fail_after(WAIT), pytest.raises(AuthenticationError, match="COMPATIBLE_API_KEY") as raised:
                await wrong_key.embed(["a"])
            assert "wrong-key" not in str(raised.value)
            # Both forms were tried (with /v1 and without), and the message names both.
            with anyio.fail_after(WAIT), pytest.raises(ConfigurationError, match="COMPATIBLE_BASE_URL") as missing:
                await wrong_route.embed(["a"])
            assert f"{gated.base_url}/nowhere nor at {gated.base_url}/nowhere/v1" in str(missing.value)
            assert "usually ends in /v1" not in str(missing.value)
        finally:
            await wrong_key.aclose()
            await wrong_route.aclose()


@pytest.mark.parametrize("suffix", ["add", "remove"])
async def test_a_404_tries_the_url_with_v1_added_or_removed_once_and_says_which_worked(
    suffix: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with LoopbackCompatible("tei", prefix="/v1" if suffix == "add" else "") as server:
        configured = server.base_url.removesuffix("/v1") if suffix == "add" else f"{server.base_url}/v1"
        working = server.base_url
        first = CompatibleProvider(CompatibleOptions(base_url=configured, model="m"), state_dir=tmp_path)
        try:
            with anyio.fail_after(WAIT):
                assert (await first.embed(["a b"])).count == 1
            assert first.base_url == working
            assert f"answers at {working}, not {configured}: using it" in caplog.text
        finally:
            await first.aclose()
        server.requests.clear()
        again = CompatibleProvider(CompatibleOptions(base_url=configured, model="m"), state_dir=tmp_path)
        try:
            with anyio.fail_after(WAIT):
                await again.embed(["c d"])
        finally:
            await again.aclose()
        assert server.statuses == [200]  # the form that worked was kept: no 404 first


async def test_list_providers_shows_no_space_until_the_length_is_known(
    ollama: LoopbackCompatible, make_service: Callable[..., EmbeddingService]
) -> None:
    service = make_service({"SIGNAL_HUB_COMPATIBLE_BASE_URL": ollama.base_url, "SIGNAL_HUB_COMPATIBLE_MODEL": "m"})
    before = {s.name: s for s in service.provider_statuses()}["compatible"]
    assert (before.dimensions, before.space, before.active) == (None, None, True)
    with anyio.fail_after(WAIT):
        await service.embed(["a b"])
    after = {s.name: s for s in service.provider_statuses()}["compatible"]
    assert after.dimensions == 12 and after.space is not None and after.space.endswith("/m:12:l2")


async def test_processes_sharing_a_data_directory_pace_one_server_together(
    make_service: Callable[..., EmbeddingService], tmp_path: Path
) -> None:
    from providers.remote.pacing import PACER_FILE, SharedPacer

    env = {"SIGNAL_HUB_COMPATIBLE_BASE_URL": "http://127.0.0.1:9/v1", "SIGNAL_HUB_COMPATIBLE_MODEL": "m"}
    shared = make_service(env).provider
    alone = make_service(env, shared_pacing=False).provider
    assert isinstance(shared, CompatibleProvider) and isinstance(alone, CompatibleProvider)
    assert isinstance(shared.limiter, SharedPacer)
    assert shared.limiter.shared  # opens the pacer every process with this data directory uses
    assert (tmp_path / PACER_FILE).exists()
    assert not isinstance(alone.limiter, SharedPacer)


# --- issue 24, high 4: an answer served wholly from the cache names the same space ---------------


def compatible_env(server: LoopbackCompatible, tmp_path: Path, model: str = "m") -> dict[str, str]:
    return {
        "SIGNAL_HUB_PROVIDER": "compatible",
        "SIGNAL_HUB_DATA_DIR": str(tmp_path / "data"),
        "SIGNAL_HUB_COMPATIBLE_BASE_URL": server.base_url,
        "SIGNAL_HUB_COMPATIBLE_MODEL": model,
    }


async def test_every_tool_names_the_endpoint_in_its_space_when_the_cache_answers(
    tei: LoopbackCompatible, tmp_path: Path
) -> None:
    from mcp import Client

    from server import build_server

    port = tei.base_url.split(":")[2].split("/")[0]
    space = f"compatible:127.0.0.1:{port}/m:8:l2"
    calls = [
        ("embed_batch", {"texts": ["a b", "c d"]}),
        ("embed_text", {"text": "e f"}),
        ("rank_texts", {"query": "a b", "texts": ["c d", "e f"]}),
    ]
    settings = Settings.from_env(compatible_env(tei, tmp_path))
    async with Client(build_server(settings), read_timeout_seconds=60) as client:
        for name, arguments in calls:
            for _ in range(2):  # fresh, then wholly from the cache
                with anyio.fail_after(WAIT):
                    result = await client.call_tool(name, arguments)
                assert result.structured_content is not None, result
                assert result.structured_content["space"] == space, (name, result.structured_content)
                assert result.structured_content["cached"] in (0, 1, 2, 3)


async def test_two_servers_serving_one_model_name_keep_their_own_space_from_the_cache(
    tei: LoopbackCompatible, make_service: Callable[..., EmbeddingService]
) -> None:
    with LoopbackCompatible("tei", dimensions=8, seed=1) as other:
        spaces = set()
        for server in (tei, other):
            env = {"SIGNAL_HUB_COMPATIBLE_BASE_URL": server.base_url, "SIGNAL_HUB_COMPATIBLE_MODEL": "bge-small"}
            for _ in range(2):
                with anyio.fail_after(WAIT):
                    result = await make_service(env).embed(["a b"])
                spaces.add(result.space)
        assert result.cached == 1
    assert len(spaces) == 2 and all("127.0.0.1:" in space for space in spaces)


def test_running_the_same_embed_twice_over_a_compatible_server_succeeds(
    tei: LoopbackCompatible, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from server.cli import main

    for name, value in compatible_env(tei, tmp_path).items():
        monkeypatch.setenv(name, value)
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts(5))))
    for run in range(2):  # the second run is wholly cached
        out = tmp_path / f"out{run}.jsonl"
        assert main(["embed", str(chunks), "-o", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 5 and {row["space"] for row in rows} == {rows[0]["space"]}
        assert "127.0.0.1:" in rows[0]["space"]


# --- issue 24 (low): a 200 that is not an embeddings answer -----------------------------------------


@pytest.mark.parametrize("fault", ["html", "badjson"])
async def test_a_200_with_an_html_page_is_an_outage_that_falls_back(fault: Any, tmp_path: Path) -> None:
    fake = FakeProvider(name="fake")
    factories = {"compatible": PROVIDER_FACTORIES["compatible"], "fake": lambda s, m, d: fake}
    with LoopbackCompatible("tei") as server:
        server.inject(fault)
        env = {**compatible_env(server, tmp_path), "SIGNAL_HUB_COMPATIBLE_DIMENSIONS": "8"}
        settings = replace(Settings.from_env(env), fallback=FallbackPolicy(chain=("compatible", "fake")))
        service = EmbeddingService("compatible", settings=settings, factories=factories)
        try:
            with anyio.fail_after(WAIT):
                result = await service.embed(["a b"])
        finally:
            await service.aclose()
    assert result.provider == "fake"
    assert "not an embeddings answer" in (result.fallback_reason or "")
    assert "COMPATIBLE_BASE_URL" in (result.fallback_reason or "")


# --- issue 25: `compatible` against a real server ---------------------------------------------------


def test_a_hung_server_costs_one_first_byte_timeout_well_within_15_s_by_default() -> None:
    options = CompatibleOptions()
    # One attempt per timed-out request, and the requests in flight get finish_in_flight at most.
    assert options.timeout_attempts == 1
    assert options.first_byte_timeout + options.finish_in_flight <= 10.0
    assert CompatibleOptions.from_env({"SIGNAL_HUB_COMPATIBLE_FIRST_BYTE_S": "3"}).first_byte_timeout == 3.0
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_COMPATIBLE_FIRST_BYTE_S"):
        CompatibleOptions.from_env({"SIGNAL_HUB_COMPATIBLE_FIRST_BYTE_S": "0"})


async def test_a_hung_server_falls_back_after_one_timeout_and_opens_the_circuit(tmp_path: Path) -> None:
    fake = FakeProvider(name="fake")
    factories = {"compatible": PROVIDER_FACTORIES["compatible"], "fake": lambda s, m, d: fake}
    with LoopbackCompatible("tei") as server:
        for _ in range(4):
            server.inject("hang")
        env = {
            **compatible_env(server, tmp_path),
            "SIGNAL_HUB_COMPATIBLE_DIMENSIONS": "8",
            "SIGNAL_HUB_COMPATIBLE_FIRST_BYTE_S": "0.5",
        }
        settings = replace(Settings.from_env(env), fallback=FallbackPolicy(chain=("compatible", "fake")))
        service = EmbeddingService("compatible", settings=settings, factories=factories)
        try:
            with anyio.fail_after(WAIT):
                first = await service.embed(["a b"])
                second = await service.embed(["c d"])
            circuit = {s.name: s.circuit for s in service.provider_statuses()}["compatible"]
        finally:
            await service.aclose()
        hung = len(server.requests)
    assert first.provider == second.provider == "fake"
    assert "did not answer in time" in (first.fallback_reason or "")
    assert circuit == "open"
    assert hung == 1  # one attempt, then the circuit kept the second call away


async def test_an_answer_from_another_model_is_warned_about_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with LoopbackCompatible("infinity", prefix="", served_model="BAAI/bge-small-en-v1.5") as server:
        wrong = CompatibleProvider(CompatibleOptions(base_url=server.base_url, model="no-such-model"))
        right = CompatibleProvider(CompatibleOptions(base_url=server.base_url, model="bge-small-en-v1.5"))
        try:
            with anyio.fail_after(WAIT):
                await wrong.embed(["a b"])
                await wrong.embed(["c d"])
                await right.embed(["e f"])
        finally:
            await wrong.aclose()
            await right.aclose()
    warnings = [r.getMessage() for r in caplog.records if "as asked" in r.getMessage()]
    assert len(warnings) == 1
    assert "'BAAI/bge-small-en-v1.5', not 'no-such-model'" in warnings[0]
    assert "SIGNAL_HUB_COMPATIBLE_MODEL=BAAI/bge-small-en-v1.5" in warnings[0]


async def test_usage_in_characters_is_replaced_by_our_count_and_marked_estimated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with LoopbackCompatible("infinity", prefix="") as server:
        counting = CompatibleProvider(CompatibleOptions(base_url=server.base_url, model="all-MiniLM-L6-v2"))
        items = texts(4)
        try:
            with anyio.fail_after(WAIT):
                result = await counting.embed(items)
                estimate = await counting.estimate_tokens(items)
        finally:
            await counting.aclose()
    assert result.tokens_estimated and result.tokens == estimate
    assert result.tokens < sum(len(t) for t in items) / 2  # not the characters the server reported
    assert "not tokens as we count them" in caplog.text


async def test_texts_over_the_input_limit_the_server_states_are_reported_truncated(tmp_path: Path) -> None:
    long, short = "word " * 400, "def f(): pass"
    for flavour, prefix in (("tei", "/v1"), ("infinity", "")):
        with LoopbackCompatible(flavour, prefix=prefix, max_input_length=256) as server:  # type: ignore[arg-type]
            limited = CompatibleProvider(
                CompatibleOptions(base_url=server.base_url, model="all-MiniLM-L6-v2"), state_dir=tmp_path / flavour
            )
            try:
                with anyio.fail_after(WAIT):
                    result = await limited.embed([short, long])
            finally:
                await limited.aclose()
        assert set(result.truncated) == {1}, flavour
        assert result.truncated[1] > 0


async def test_without_a_stated_limit_the_result_says_truncation_is_unknown(
    tei: LoopbackCompatible, make_service: Callable[..., EmbeddingService]
) -> None:
    service = make_service({"SIGNAL_HUB_COMPATIBLE_BASE_URL": tei.base_url, "SIGNAL_HUB_COMPATIBLE_MODEL": "m"})
    with anyio.fail_after(WAIT):
        short = await service.embed(["a b"])
        long = await service.embed(["a b", "word " * 400])
    assert short.warning is None  # nothing long enough to be cut
    assert long.warning is not None and "truncation unknown" in long.warning and "1 long text" in long.warning
    assert not long.truncated


# --- issue 25, protocol details: what was learnt survives a restart ---------------------------------


async def test_after_a_restart_with_the_server_down_cached_texts_still_answer(tmp_path: Path) -> None:
    items = texts(3)
    with LoopbackCompatible("tei", dimensions=8) as server:
        env = compatible_env(server, tmp_path)
        service = EmbeddingService(settings=Settings.from_env(env))
        try:
            with anyio.fail_after(WAIT):
                first = await service.embed(items)
        finally:
            await service.aclose()
    # The server is gone; a new process on the same data directory.
    restarted = EmbeddingService(settings=replace(Settings.from_env(env), fallback=FallbackPolicy(mode="never")))
    try:
        assert restarted.provider.space == first.space  # known before any request
        with anyio.fail_after(WAIT):
            again = await restarted.embed(items)
    finally:
        await restarted.aclose()
    assert again.cached == 3 and again.space == first.space
    np.testing.assert_allclose(again.vectors, first.vectors, atol=1e-6)


async def test_a_kept_length_is_checked_against_the_first_real_answer(tmp_path: Path) -> None:
    with LoopbackCompatible("tei", dimensions=8) as server:
        options = CompatibleOptions(base_url=server.base_url, model="m")
        learning = CompatibleProvider(options, state_dir=tmp_path)
        try:
            with anyio.fail_after(WAIT):
                await learning.resolve_space()
        finally:
            await learning.aclose()
        server.dimensions = 16  # the model behind the URL changed between two starts
        restarted = CompatibleProvider(options, state_dir=tmp_path)
        try:
            assert restarted.dimensions == 8
            with anyio.fail_after(WAIT), pytest.raises(ProviderError, match="at an earlier start it made 8"):
                await restarted.embed(["a b"])
            assert restarted.dimensions == 16
            with anyio.fail_after(WAIT):
                assert (await restarted.embed(["a b"])).dimensions == 16
        finally:
            await restarted.aclose()
        assert CompatibleProvider(options, state_dir=tmp_path).dimensions == 16  # and kept for the next start


async def test_a_job_whose_windows_are_all_cached_ends_done(tei: LoopbackCompatible, tmp_path: Path) -> None:
    import json

    from providers.jobs.engine import InProcessEngine
    from providers.jobs.paths import AllowedRoots
    from providers.jobs.runner import JobRunner

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts(6))))
    settings = Settings.from_env(compatible_env(tei, tmp_path))
    async with EmbeddingService(settings=settings) as service:
        with anyio.fail_after(WAIT):
            await service.embed(texts(6))  # every window of the job is in the cache now
        async with JobRunner(settings, AllowedRoots((tmp_path,)), engine=InProcessEngine(service)) as runner:
            started = await runner.start(str(source), "out.jsonl")
            with anyio.fail_after(WAIT):
                job = await runner.wait(started.job.id)
    assert (job.status, job.done, job.cached) == ("done", 6, 6), job.errors
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {row["space"] for row in rows} == {service.provider.space}
