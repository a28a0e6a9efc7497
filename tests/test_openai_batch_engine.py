"""The Batch API engine through the real openai SDK against the loopback Files and Batches APIs.

The loopback's batch clock and the engine's sleep are one fake clock: a batch's 40 virtual
minutes pass in the engine's polls, and no test really waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import numpy as np
import openai
import pytest

from providers import Settings
from providers.base import space_id
from providers.batch_api import (
    BatchApiEngine,
    BatchApiOptions,
    BatchLimits,
    BatchState,
    batch_engine,
    embed_with_batch_api,
)
from providers.errors import AuthenticationError, BudgetExceededError, ConfigurationError, ProviderUnavailableError
from providers.openai import OpenAIOptions
from providers.remote.batching import RequestLimits
from providers.settings import Budget
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger
from providers.text.tokens import Utf8ByteEstimate
from tests.loopback_openai import LoopbackOpenAI, embedding_for

KEY = "sk-test-batch"
WAIT = 30
DIMS = 8
SMALL = BatchLimits(max_inputs=12, request=RequestLimits(max_inputs=4, max_input_tokens=200, max_request_tokens=800))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as running:
        running.batches.clock = clock
        yield running


@pytest.fixture
async def client(server: LoopbackOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    yield sdk
    await sdk.close()


class Harness:
    def __init__(self, client: openai.AsyncOpenAI, clock: FakeClock, path: Path) -> None:
        self.client, self.clock, self.path = client, clock, path
        self.cache = EmbeddingCache(path / "cache.sqlite3")
        self.ledger = CostLedger(path / "ledger.sqlite3")

    def engine(self, **options: object) -> BatchApiEngine:
        budget = options.pop("budget", None)
        prices = options.pop("prices", None)
        opts = BatchApiOptions(dimensions=DIMS, limits=SMALL, poll_initial=60, poll_max=600, **options)  # type: ignore[arg-type]
        return BatchApiEngine(
            self.client,
            state=BatchState(self.path / "batches.sqlite3"),
            cache=self.cache,
            ledger=self.ledger,
            budget=budget,  # type: ignore[arg-type]
            prices=prices,  # type: ignore[arg-type]
            options=opts,
            tokenizer=Utf8ByteEstimate(),
            sleep=self.clock.sleep,
        )


@pytest.fixture
def harness(client: openai.AsyncOpenAI, clock: FakeClock, tmp_path: Path) -> Harness:
    return Harness(client, clock, tmp_path)


def texts_of(n: int, tag: str = "") -> list[str]:
    return [f"def function_{tag}{i}(value):\n    return value * {i}" for i in range(n)]


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([embedding_for(text, "text-embedding-3-small", DIMS) for text in texts])


@pytest.mark.anyio
async def test_vectors_come_back_in_input_order_from_a_shuffled_output_file(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    texts = texts_of(30)
    texts.insert(5, texts[20])  # a repeat is sent once and answered twice
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert result.status.state == "completed" and result.missing == ()
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    # 30 distinct texts, 4 per request, at most 12 inputs per batch: 8 requests in 3 files.
    assert (result.status.requests, result.status.files, server.batches.batches_created) == (8, 3, 3)
    assert server.batches.request_lines == 8
    first = server.batches._batches[result.status.batches[0].batch_id or ""]
    output = server.batches.file_content(first.output_file_id or "")
    ids = [line.split(b'"custom_id":"')[1].split(b'"')[0] for line in output.splitlines()]
    assert ids != sorted(ids, key=lambda value: int(value.split(b"-")[1]))  # the file really was shuffled


@pytest.mark.anyio
async def test_only_texts_missing_from_the_cache_are_sent(harness: Harness, server: LoopbackOpenAI) -> None:
    texts = texts_of(10)
    space = space_id("openai", "text-embedding-3-small", DIMS, True)
    harness.cache.put_many(space, texts[:6], expected(texts[:6]), [0] * 6)
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert result.status.texts == 4 and server.inputs_embedded == 4
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    estimate = await harness.engine().estimate(texts)
    assert estimate.texts == 0 and estimate.cached == 10


@pytest.mark.anyio
async def test_the_loopback_rejects_a_file_over_its_limits_and_the_engine_reports_why(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    server.batches.max_inputs = 5  # the engine believes 12 fit
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts_of(12))
    assert result.status.state == "partial" and len(result.missing) == 12
    assert all("too_many_inputs" in why for why in result.status.failed_requests.values())
    assert harness.ledger._held() == 0  # the reservation of a failed batch is released


@pytest.mark.anyio
async def test_a_failed_request_goes_into_a_follow_up_batch(harness: Harness, server: LoopbackOpenAI) -> None:
    server.batches.inject("request_error")
    texts = texts_of(8)
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert result.status.state == "completed"
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    assert server.batches.batches_created == 2 and result.status.requests_sent == 3  # 2, then the failed one again


@pytest.mark.anyio
async def test_a_request_still_failing_after_its_tries_is_reported_by_id(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    server.batches.inject("request_error", times=2)
    texts = texts_of(8)
    with anyio.fail_after(WAIT):
        result = await harness.engine(max_tries=2).run("job", texts)
    assert result.status.state == "partial"
    assert list(result.status.failed_requests) == ["texts-0-4"]
    assert (
        "HTTP 500" in result.status.failed_requests["texts-0-4"]
        and "after 2 tries" in result.status.failed_requests["texts-0-4"]
    )
    assert result.missing == (0, 1, 2, 3)
    np.testing.assert_allclose(result.vectors[4:], expected(texts[4:]), atol=1e-6)


@pytest.mark.anyio
async def test_an_expired_batch_keeps_its_billed_work_and_the_rest_is_resubmitted(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    server.batches.inject("expire")
    texts = texts_of(12)
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert result.status.state == "completed"
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    first, second = (server.batches._batches[b.batch_id or ""] for b in result.status.batches)
    assert (first.status, first.completed, second.status, len(second.lines)) == ("expired", 1, "completed", 2)
    assert server.inputs_embedded == 12  # nothing embedded (or billed) twice
    report = harness.ledger.report()
    assert report.total.embeddings == 12 and report.total.tokens == server.tokens_served


@pytest.mark.anyio
async def test_a_rejected_file_fails_its_requests_by_id_and_spends_nothing(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    server.batches.inject("reject")
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts_of(6))
    assert result.status.state == "partial" and set(result.status.failed_requests) == {"texts-0-4", "texts-4-6"}
    assert "injected: the file was rejected" in result.status.failed_requests["texts-0-4"]
    assert harness.ledger.report().total_usd == 0 and harness.ledger._held() == 0


@pytest.mark.anyio
async def test_a_5xx_on_poll_is_ridden_out_and_too_many_in_a_row_stop_the_run(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    server.batches.inject("poll_500", times=2)
    texts = texts_of(4)
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert result.status.state == "completed"
    server.batches.inject("poll_500", times=5)
    with anyio.fail_after(WAIT), pytest.raises(ProviderUnavailableError, match="3 polls in a row"):
        await harness.engine(poll_failures=3).run("job2", texts_of(4, "b"))
    assert server.batches.batches_created == 2  # still running remotely; a later run re-attaches


@pytest.mark.anyio
async def test_a_restarted_run_re_attaches_and_never_submits_twice(harness: Harness, server: LoopbackOpenAI) -> None:
    texts = texts_of(20)
    with anyio.fail_after(WAIT):
        first = await harness.engine().advance("job", texts)
        assert first.state == "running" and server.batches.batches_created == 2
        result = await harness.engine().run("job", texts)  # a new engine: only the state file is shared
    assert server.batches.batches_created == 2 and result.status.state == "completed"
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)


@pytest.mark.anyio
async def test_a_run_killed_between_creating_a_batch_and_recording_it_finds_the_batch(
    harness: Harness, server: LoopbackOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = texts_of(4)
    crashed = harness.engine()

    def killed(row_id: str, batch_id: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(crashed.state, "set_batch_id", killed)
    with anyio.fail_after(WAIT), pytest.raises(KeyboardInterrupt):
        await crashed.advance("job", texts)
    assert server.batches.batches_created == 1
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert server.batches.batches_created == 1 and result.status.batches[0].batch_id == "batch_loopback000002"
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)


@pytest.mark.anyio
async def test_cancel_cancels_the_remote_batches_and_keeps_what_they_finished(
    harness: Harness, server: LoopbackOpenAI, clock: FakeClock
) -> None:
    texts = texts_of(24)
    engine = harness.engine()
    with anyio.fail_after(WAIT):
        await engine.advance("job", texts)
        clock.now += 120 + 1800 * 0.6  # validated, and 60% through its requests
        status = await engine.cancel("job")
        assert {b.status for b in status.batches} == {"cancelling"}
        result = await engine.run("job", texts)
    assert {server.batches.batch_status(b.batch_id or "") for b in result.status.batches} == {"cancelled"}
    assert result.status.state == "cancelled" and server.batches.batches_created == 2
    kept = [i for i in range(24) if i not in result.missing]
    assert kept and len(result.missing) > 0
    np.testing.assert_allclose(result.vectors[kept], expected([texts[i] for i in kept]), atol=1e-6)
    assert set(result.status.failed_requests.values()) == {"cancelled"}


@pytest.mark.anyio
async def test_usage_is_billed_at_half_the_price_or_at_an_override(harness: Harness, server: LoopbackOpenAI) -> None:
    with anyio.fail_after(WAIT):
        await harness.engine().run("job", texts_of(10))
    tokens = server.tokens_served
    assert harness.ledger.report().total_usd == pytest.approx(tokens * 0.02 / 1e6 * 0.5)
    before = harness.ledger.report().total_usd
    with anyio.fail_after(WAIT):
        await harness.engine(prices={"text-embedding-3-small@batch": 1.0}).run("job2", texts_of(10, "b"))
    assert harness.ledger.report().total_usd - before == pytest.approx((server.tokens_served - tokens) / 1e6)


@pytest.mark.anyio
async def test_the_budget_is_reserved_at_submission_and_settled_on_completion(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    prices = {"text-embedding-3-small": 2000.0}  # dear enough for the limits to bite; the batch price is half
    texts = texts_of(4)
    estimate = await harness.engine(prices=prices).estimate(texts)
    assert estimate.batch_usd is not None and estimate.usd is not None and estimate.batch_usd < estimate.usd
    hard = Budget(hard_usd=estimate.batch_usd * 1.5, period="all")
    engine = harness.engine(prices=prices, budget=hard)
    with anyio.fail_after(WAIT):
        await engine.advance("job", texts)
        assert harness.ledger._held() == pytest.approx(estimate.batch_usd)
        # A second job of the same size would pass the hard limit while the first is held.
        with pytest.raises(BudgetExceededError):
            await harness.engine(prices=prices, budget=hard).advance("job2", texts_of(4, "b"))
        assert server.batches.files_uploaded == 1
        await engine.run("job", texts)
    assert harness.ledger._held() == 0
    assert harness.ledger.report().total_usd == pytest.approx(server.tokens_served * 1000.0 / 1e6)
    assert harness.ledger.report().total_usd <= hard.hard_usd  # type: ignore[operator]


@pytest.mark.anyio
async def test_a_job_resumes_only_with_its_own_texts_and_space(harness: Harness) -> None:
    with anyio.fail_after(WAIT):
        await harness.engine().advance("job", texts_of(6))
        with pytest.raises(ConfigurationError, match="planned with other texts"):
            await harness.engine().advance("job", texts_of(6, "other"))
        other_space = BatchApiEngine(
            harness.client, state=BatchState(harness.path / "batches.sqlite3"), cache=harness.cache
        )
        with pytest.raises(ConfigurationError, match="same model and dimensions"):
            await other_space.advance("job", texts_of(6))
    with pytest.raises(ConfigurationError, match="no Batch API job"):
        harness.engine().status("nobody")


@pytest.mark.anyio
async def test_a_running_batch_keeps_its_budget_held_past_the_ledgers_hour(harness: Harness, tmp_path: Path) -> None:
    wall = FakeClock()
    wall.now = 1_800_000_000.0
    ledger = CostLedger(tmp_path / "held.sqlite3", now=wall)
    state = BatchState(tmp_path / "held-batches.sqlite3", now=wall)

    def engine() -> BatchApiEngine:
        return BatchApiEngine(
            harness.client,
            state=state,
            cache=harness.cache,
            ledger=ledger,
            budget=Budget(hard_usd=1.0, period="all"),
            prices={"text-embedding-3-small": 2000.0},
            options=BatchApiOptions(dimensions=DIMS, limits=SMALL),
            tokenizer=Utf8ByteEstimate(),
        )

    first = engine()
    with anyio.fail_after(WAIT):
        await first.advance("job", texts_of(4))
        held = ledger._held()
        assert held > 0
        for _ in range(3):  # 150 minutes: the ledger alone would have forgotten the reservation after 60
            wall.now += 50 * 60
            await first.advance("job", texts_of(4))
            assert ledger._held() == pytest.approx(held)
        before = state.batches("job")[0].reservation_id
        await engine().advance("job", texts_of(4))  # a restarted run takes the reservation over at once
        assert state.batches("job")[0].reservation_id != before and ledger._held() == pytest.approx(held)


@pytest.mark.anyio
async def test_the_entry_point_builds_the_engine_from_settings(
    server: LoopbackOpenAI, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        openai_base_url=server.base_url,
        openai_api_key=KEY,
        provider_options={"openai": OpenAIOptions(dimensions=DIMS)},
        prices={"text-embedding-3-small@batch": 0.5},
    )
    texts = texts_of(5)
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    with anyio.fail_after(WAIT):
        result = await embed_with_batch_api(settings, texts, job_id="j", progress=progress, sleep=clock.sleep)
    np.testing.assert_allclose(result.vectors, expected(texts), atol=1e-6)
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    assert (tmp_path / "batch_jobs.sqlite3").exists()
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    assert ledger.report().total_usd == pytest.approx(server.tokens_served * 0.5 / 1e6)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        batch_engine(Settings(data_dir=tmp_path))


@pytest.mark.anyio
async def test_a_run_killed_before_creating_its_batch_creates_it_once_on_restart_or_drops_it_on_cancel(
    harness: Harness, server: LoopbackOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = {"text-embedding-3-small": 2000.0}
    budget = Budget(hard_usd=100.0, period="all")
    for job in ("resumed", "cancelled"):
        crashed = harness.engine(prices=prices, budget=budget)

        async def killed(input_file_id: str, metadata: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(crashed.remote, "create", killed)
        with anyio.fail_after(WAIT), pytest.raises(KeyboardInterrupt):
            await crashed.advance(job, texts_of(4, job))
    assert server.batches.files_uploaded == 2 and server.batches.batches_created == 0
    with anyio.fail_after(WAIT):
        result = await harness.engine(prices=prices, budget=budget).run("resumed", texts_of(4, "resumed"))
        assert result.status.state == "completed" and server.batches.batches_created == 1
        cancelled = await harness.engine(prices=prices, budget=budget).cancel("cancelled")
        assert cancelled.state == "running"  # its batch row is settled at the next step
        final = await harness.engine(prices=prices, budget=budget).run("cancelled", texts_of(4, "cancelled"))
    assert final.status.state == "cancelled" and server.batches.batches_created == 1
    assert harness.ledger._held() == 0


@pytest.mark.anyio
async def test_a_failed_upload_releases_its_reservation_and_a_vanished_batch_is_an_error(
    harness: Harness, server: LoopbackOpenAI, clock: FakeClock
) -> None:
    bad = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
    engine = harness.engine(prices={"text-embedding-3-small": 2000.0}, budget=Budget(hard_usd=100.0, period="all"))
    engine.remote.client = bad
    with anyio.fail_after(WAIT), pytest.raises(AuthenticationError):
        await engine.advance("job", texts_of(4))
    assert harness.ledger._held() == 0
    await bad.close()
    with anyio.fail_after(WAIT):
        status = await harness.engine().advance("job", texts_of(4))
        server.batches._batches.pop(status.batches[0].batch_id or "")
        with pytest.raises(ConfigurationError, match="found nothing while reading batch"):
            await harness.engine().advance("job", texts_of(4))


@pytest.mark.anyio
async def test_an_over_long_text_is_cut_and_the_cut_is_reported_per_row(
    harness: Harness, server: LoopbackOpenAI
) -> None:
    texts = ["short text", "word " * 100]  # 500 bytes: over the 200-token limit as the byte estimate counts
    with anyio.fail_after(WAIT):
        result = await harness.engine().run("job", texts)
    assert result.missing == () and result.dropped[0] == 0 and result.dropped[1] == 300
    (line,) = server.batches._batches[result.status.batches[0].batch_id or ""].lines
    sent = line["body"]["input"][1]
    assert len(sent.encode()) == 200 and texts[1].startswith(sent)
