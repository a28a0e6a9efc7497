"""Reported usage is checked against our own count: recorded as billed, and spending stops at once.

Issue 24, medium 8: a priced `compatible` server reporting 100,000 tokens for a 4-token text
recorded $1.00 against a $0.01 limit; Batch API usage of 10^12 tokens recorded $30,000 against $1;
`prompt_tokens` of 10^20 gave "unexpected OverflowError" and dropped the vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import numpy as np
import pytest

from providers import EmbeddingService, Settings
from providers.base import EmbeddingResult
from providers.batch_api.entry import default_options, embed_with_batch_api
from providers.compatible import CompatibleOptions
from providers.errors import BudgetExceededError, ProviderError
from providers.remote.batching import RequestLimits
from providers.settings import Budget
from providers.storage.ledger import CostLedger
from tests.loopback_hostile import Answer, LoopbackHostile, Request, json_body
from tests.loopback_openai import LoopbackOpenAI, embedding_for

pytestmark = pytest.mark.anyio

WAIT = 60
KEY = "sk-test-usage-bound"


class Overcounting:
    """A compatible server that reports `reported` prompt tokens for every request."""

    def __init__(self, reported: int) -> None:
        self.reported = reported
        self.server = LoopbackHostile(self.answer)

    def answer(self, request: Request) -> Answer:
        inputs = request.json()["input"]
        data = [{"object": "embedding", "index": i, "embedding": [1.0 + i, 2.0, 3.0, 4.0]} for i in range(len(inputs))]
        usage = {"prompt_tokens": self.reported, "total_tokens": self.reported}
        return Answer(200, json_body({"object": "list", "data": data, "usage": usage}))


@pytest.fixture
def overcounting() -> Iterator[Overcounting]:
    server = Overcounting(100_000)
    with server.server:
        yield server


def priced(settings: Settings, base_url: str, *, hard_usd: float) -> Settings:
    options = CompatibleOptions(
        base_url=base_url,
        model="m",
        dimensions=4,
        price=10.0,  # USD per 1M tokens: 100,000 tokens are $1.00
        limits=RequestLimits(max_inputs=1, max_input_tokens=512, max_request_tokens=512),
        concurrency=1,
    )
    return replace(
        settings,
        provider="compatible",
        provider_options={"compatible": options},
        budget=Budget(hard_usd=hard_usd),
        fallback=replace(settings.fallback, mode="never"),
    )


def embedding_requests(overcounting: Overcounting) -> list[object]:
    """The embedding requests the server got (not the probes of its stated input limit)."""
    return [request for request in overcounting.server.requests if request.method == "POST"]


async def test_implausible_usage_is_recorded_as_billed_and_stops_the_call_at_once(
    settings: Settings, overcounting: Overcounting
) -> None:
    chosen = priced(settings, overcounting.server.base_url, hard_usd=0.01)
    async with EmbeddingService(settings=chosen) as service:
        with anyio.fail_after(WAIT), pytest.raises(ProviderError, match="not a plausible count") as raised:
            await service.embed(["def f(): pass", "def g(): pass", "def h(): pass"])
        assert "reported 100,000 tokens for 1 texts" in str(raised.value)
        assert len(embedding_requests(overcounting)) == 1  # the other two requests were never sent
        assert service.get_cost() == pytest.approx(1.00)  # what the server will bill
        with anyio.fail_after(WAIT), pytest.raises(BudgetExceededError):
            await service.embed(["def k(): pass"])
        assert len(embedding_requests(overcounting)) == 1


async def test_usage_too_large_for_sqlite_is_recorded_and_the_vectors_kept(settings: Settings) -> None:
    huge = Overcounting(10**20)
    with huge.server:
        chosen = priced(settings, huge.server.base_url, hard_usd=1_000.0)
        async with EmbeddingService(settings=chosen) as service:
            with anyio.fail_after(WAIT), pytest.raises(ProviderError, match="not a plausible count"):
                await service.embed(["def f(): pass"])
            report = service.cost_report()
            assert report.total.requests == 1 and report.total.tokens > 0  # recorded, not an OverflowError
            assert service.get_cost() > 1_000.0  # every later paid call is refused
            assert service.cache is not None
            provider = service.get_provider()
            found = service.cache.get_many(provider.space, ["def f(): pass"], 4)
            assert "def f(): pass" in found  # paid for, so kept


@pytest.fixture
def batches() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY, time_scale=36_000.0) as server:
        yield server


def batch_settings(settings: Settings, server: LoopbackOpenAI, **budget: float) -> Settings:
    return replace(
        settings, provider="openai", openai_base_url=server.base_url, openai_api_key=KEY, budget=Budget(**budget)
    )


def quick(settings: Settings) -> object:
    return dataclasses.replace(default_options(settings), poll_initial=0.02, poll_max=0.05)


async def test_batch_api_usage_of_10_to_the_12_is_recorded_as_billed_and_cancels_the_job(
    settings: Settings, batches: LoopbackOpenAI
) -> None:
    chosen = batch_settings(settings, batches, hard_usd=1.0)
    batches.batches.inject("overbill")
    texts = [f"def function_{i}(value): return value * {i}" for i in range(6)]
    with anyio.fail_after(WAIT), pytest.raises(ProviderError, match="not a plausible count") as raised:
        await embed_with_batch_api(chosen, texts, job_id="overbilled", options=quick(chosen))  # type: ignore[arg-type]
    assert "recorded as billed" in str(raised.value) and "cancelled" in str(raised.value)
    ledger = CostLedger(chosen.resolved_data_dir / "ledger.sqlite3")
    try:
        assert ledger.report().total.usd == pytest.approx(10**12 * 0.01 / 1e6)  # the batch price: billed
    finally:
        ledger.close()
    with anyio.fail_after(WAIT), pytest.raises(BudgetExceededError):  # a rerun spends nothing more
        await embed_with_batch_api(chosen, [*texts, "def new(): pass"], job_id="next", options=quick(chosen))  # type: ignore[arg-type]
    assert batches.batches.batches_created == 1


async def test_a_request_answered_twice_in_one_output_file_is_not_used_and_is_sent_again(
    settings: Settings, batches: LoopbackOpenAI
) -> None:
    chosen = batch_settings(settings, batches)
    batches.batches.shuffle_output = False  # the swapped answer comes last: it used to win
    batches.batches.inject("duplicate")
    texts = [f"def function_{i}(value): return value * {i}" for i in range(4)]
    with anyio.fail_after(WAIT):
        result = await embed_with_batch_api(chosen, texts, job_id="twice", options=quick(chosen))  # type: ignore[arg-type]
    assert result.missing == () and batches.batches.batches_created == 2  # sent again, in a follow-up batch
    expected = np.stack([embedding_for(text, "text-embedding-3-small", 1536) for text in texts])
    assert np.allclose(result.vectors, expected, atol=1e-6)  # in input order: not texts 0 and 1 swapped


def test_the_ledger_keeps_a_row_of_absurd_usage_without_overflowing(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    try:
        for _ in range(3):
            ledger.record(
                EmbeddingResult(
                    vectors=np.ones((1, 4), dtype=np.float32), provider="p", model="m", tokens=10**20, cost_usd=2e12
                )
            )
        report = ledger.report()
    finally:
        ledger.close()
    assert report.total.requests == 3 and report.total_usd == pytest.approx(6e12)
