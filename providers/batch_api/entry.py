"""The Batch API engine built from `Settings`: the entry point for the `embed` command and the job runner.

```python
result = await embed_with_batch_api(Settings.from_env(), texts, job_id="reindex-2026-11")
result.vectors          # input order; killed and run again with the same job id, it re-attaches
```
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import anyio
import openai

from providers.base import ProgressCallback
from providers.batch_api.engine import BatchApiEngine
from providers.batch_api.options import BatchApiOptions
from providers.batch_api.packing import BATCH_API_LIMITS
from providers.batch_api.state import BatchState
from providers.batch_api.status import BatchJobResult
from providers.errors import AuthenticationError
from providers.openai import openai_options
from providers.redaction import add_secret
from providers.remote.capped import capped_client
from providers.remote.ratelimit import Sleep
from providers.settings import Settings
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger

__all__ = ["STATE_FILE", "batch_engine", "default_options", "embed_with_batch_api"]

STATE_FILE = "batch_jobs.sqlite3"


def batch_engine(
    settings: Settings,
    *,
    model: str | None = None,
    options: BatchApiOptions | None = None,
    ledger: CostLedger | None = None,
    cache: EmbeddingCache | None = None,
    sleep: Sleep = anyio.sleep,
) -> BatchApiEngine:
    """The engine with the settings' key, base URL, model, request limits, prices and budget.

    State, cache and ledger live in the data directory beside the service's own (the same cache
    and ledger files, so the synchronous engine answers from vectors a batch made, and the other
    way round). Pass `ledger`/`cache` to share the ones a running service holds.
    """
    key = settings.openai_api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise AuthenticationError("no OpenAI API key: set OPENAI_API_KEY to use the Batch API engine.")
    data_dir = settings.resolved_data_dir
    if options is None:
        options = default_options(settings)
    add_secret(key)
    # Every answer bounded in memory, decompressed (a download's by its batch: `BatchRemote.download`).
    client = openai.AsyncOpenAI(
        api_key=key, base_url=settings.openai_base_url, max_retries=0, http_client=capped_client()
    )
    return BatchApiEngine(
        client,
        state=BatchState(data_dir / STATE_FILE),
        cache=cache or EmbeddingCache(data_dir / "cache.sqlite3"),
        model=model or settings.openai_model,
        options=options,
        ledger=ledger or CostLedger(data_dir / "ledger.sqlite3", session=settings.ledger_session),
        budget=settings.budget,
        prices=dict(settings.prices),
        sleep=sleep,
    )


async def embed_with_batch_api(
    settings: Settings,
    texts: Sequence[str],
    *,
    job_id: str,
    model: str | None = None,
    options: BatchApiOptions | None = None,
    progress: ProgressCallback | None = None,
    sleep: Sleep = anyio.sleep,
) -> BatchJobResult:
    """Embed `texts` through the Batch API and wait for them; safe to run again after a kill (same `job_id`)."""
    engine = batch_engine(settings, model=model, options=options, sleep=sleep)
    try:
        return await engine.run(job_id, texts, progress=progress)
    finally:
        await engine.aclose()
        engine.cache.close()
        if engine.ledger is not None:
            engine.ledger.close()


def default_options(settings: Settings) -> BatchApiOptions:
    """The options `batch_engine` takes from the settings: dimensions, over-long policy, request limits."""
    openai = openai_options(settings)
    limits = replace(BATCH_API_LIMITS, request=openai.limits)
    return BatchApiOptions(dimensions=openai.dimensions, overlong=openai.overlong, limits=limits)
