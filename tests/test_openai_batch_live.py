"""Opt-in check of the Batch API engine against the real OpenAI API (OPENAI_API_KEY set and the API reachable).

    OPENAI_API_KEY=sk-... .venv/bin/python -m pytest tests/test_openai_batch_live.py -m live

A real batch may take up to 24 hours, so the test submits a two-text batch, checks that OpenAI
accepted it, and cancels it (a cancelled batch bills only what it finished: a few tokens at most).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import openai
import pytest

from providers.batch_api import BatchApiEngine, BatchApiOptions, BatchState
from providers.storage.cache import EmbeddingCache
from tests.test_openai_live import _REASON

WAIT = 120

pytestmark = [pytest.mark.live, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.mark.anyio
async def test_the_real_batch_api_accepts_a_batch_and_cancels_it(tmp_path: Path) -> None:
    client = openai.AsyncOpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ.get("OPENAI_BASE_URL"))
    engine = BatchApiEngine(
        client,
        state=BatchState(tmp_path / "batches.sqlite3"),
        cache=EmbeddingCache(tmp_path / "cache.sqlite3"),
        options=BatchApiOptions(dimensions=256),
    )
    texts = ["def add(a, b): return a + b", "The weather is sunny."]
    try:
        with anyio.fail_after(WAIT):
            submitted = await engine.advance("live-job", texts)
            assert submitted.state == "running" and submitted.batches[0].batch_id is not None
            assert submitted.batches[0].status in {"validating", "in_progress"}
            cancelled = await engine.cancel("live-job")
            assert cancelled.batches[0].status in {"cancelling", "cancelled", "completed"}
    finally:
        await client.close()
