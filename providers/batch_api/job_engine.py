"""The OpenAI Batch API as a job engine: half price, answered within 24 h.

```python
engine = BatchJobEngine(settings, InProcessEngine(job_settings(settings)))
await engine.run(EngineJob("job-1", "openai", space), chunks, writer, tally, on_progress)
```

The job's id keys the Batch API engine's state (`batch_jobs.sqlite3`): a run killed and started
again with the same id and input re-attaches to its batches and never submits one twice. Only
texts missing from the cache are sent. Rows are written in input order once every batch is in.
A row whose requests failed for good (or were cancelled, or expired) fails the run, saying why:
the rows that have vectors are cached, and the next run (a resume) submits the rest again.
Tokens and USD are what the answers reported (billed), not our estimate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from providers.base import EmbeddingProvider
from providers.batch_api import BatchApiEngine, BatchApiOptions, BatchJobStatus, batch_engine
from providers.batch_api.entry import default_options
from providers.batch_api.state import DONE
from providers.cost import batch_price_per_million
from providers.errors import ConfigurationError, EmbeddingError, InputError, ProviderError
from providers.jobs.engine import EngineJob
from providers.jobs.files import Chunk
from providers.jobs.pipeline import Tally
from providers.jobs.writers import VectorWriter
from providers.redaction import cut
from providers.remote.ratelimit import Sleep
from providers.settings import Settings

__all__ = ["BatchJobEngine", "BatchesRunning", "batch_summary", "build_engine"]

_WRITE_ROWS = 1024
MAX_LISTED_BATCHES = 8
"""Batches a status lists one by one; more are summed up by status (answers stay small)."""


class BatchesRunning(EmbeddingError):
    """With `wait=False`: the job's batches are submitted and still run; the same run again collects them."""


class BatchJobEngine:
    """A `JobEngine` over `BatchApiEngine`; providers (and so spaces) come from `providers`, OpenAI only."""

    name = "batch-api"

    def __init__(
        self,
        settings: Settings,
        providers: Callable[[str | None], EmbeddingProvider],
        *,
        options: BatchApiOptions | None = None,
        sleep: Sleep = anyio.sleep,
        wait: bool = True,
    ) -> None:
        self.settings = settings
        self.wait = wait
        self._providers = providers
        self._options = options
        self._sleep = sleep
        self._engines: dict[str, BatchApiEngine] = {}

    def provider(self, name: str | None) -> EmbeddingProvider:
        chosen = self._providers(name or "openai")
        if chosen.name != "openai":
            raise InputError(f"the batch-api engine embeds with OpenAI only, not {chosen.name}; use provider openai.")
        return chosen

    def engine(self, model: str) -> BatchApiEngine:
        """The Batch API engine for `model`, built on first use and kept until `aclose`."""
        if model not in self._engines:
            self._engines[model] = batch_engine(self.settings, model=model, options=self._options, sleep=self._sleep)
        return self._engines[model]

    async def run(
        self,
        job: EngineJob,
        chunks: Iterable[Chunk],
        writer: VectorWriter,
        tally: Tally,
        on_progress: Callable[[int], None],
    ) -> None:
        provider = self.provider(job.provider)
        engine = self.engine(provider.model)
        if engine.space != job.space:
            raise ConfigurationError(f"the Batch API would embed into {engine.space}, not the job's {job.space}.")
        ids, texts = [], []
        for chunk in chunks:
            ids.append(chunk.id)
            texts.append(chunk.text)
        # A run of the job is a resume: what a cancel or a failure left undone is sent again.
        engine.reopen(job.id)
        texts_before, tokens_before = _done(engine, job.id)

        async def progress(done: int, total: int) -> None:
            # Rows answered from the cache count as done from the start.
            on_progress(len(texts) - total + done)

        if not self.wait:
            status = await engine.advance(job.id, texts)
            if not status.finished:
                raise BatchesRunning(
                    f"{len(status.batches)} batch(es) of {status.texts:,} texts run at OpenAI ({status.done:,} "
                    "done): the same command again collects them (within 24 h of submission)."
                )
        try:
            result = await engine.run(job.id, texts, progress=progress)
        finally:  # what was billed counts, however the run ends
            texts_after, tokens_after = _done(engine, job.id)
            tokens = tokens_after - tokens_before
            price = batch_price_per_million("openai", provider.model, self.settings.prices)
            tally.tokens += tokens
            tally.usd += 0.0 if price is None else tokens * price / 1e6
            tally.unpriced = tally.unpriced or (price is None and tokens > 0)
        missing = len(result.missing)
        embedded = min(texts_after - texts_before, len(texts) - missing)  # sent and answered in this run
        tally.embedded += embedded
        tally.cached += len(texts) - missing - embedded
        if missing:  # nothing is written: the output holds every row or none (callers count what is undone)
            raise ProviderError(_why_missing(missing, len(texts), result.status))
        for start in range(0, len(texts), _WRITE_ROWS):
            rows = list(range(start, min(start + _WRITE_ROWS, len(texts))))
            dropped = [result.dropped[i] if result.dropped else 0 for i in rows]
            await anyio.to_thread.run_sync(writer.write, [ids[i] for i in rows], result.vectors[rows], dropped)
            tally.truncated += sum(1 for lost in dropped if lost)
            tally.dropped_tokens += sum(dropped)
        on_progress(tally.written)

    def status(self, job_id: str, model: str) -> BatchJobStatus | None:
        """The job's batches as last polled (no remote call); None before any was planned."""
        try:
            return self.engine(model).status(job_id)
        except ConfigurationError:
            return None

    async def cancel(self, job_id: str, model: str) -> None:
        """Cancel the job's remote batches (nothing if it never planned any)."""
        engine = self.engine(model)
        if engine.state.job(job_id) is not None:
            await engine.cancel(job_id)

    async def aclose(self) -> None:
        engines, self._engines = self._engines, {}
        for engine in engines.values():
            await engine.aclose()
            engine.cache.close()
            if engine.ledger is not None:
                engine.ledger.close()


def _done(engine: BatchApiEngine, job_id: str) -> tuple[int, int]:
    """Texts and tokens of the job's requests answered so far (over all runs)."""
    if engine.state.job(job_id) is None:
        return 0, 0
    done = [request for request in engine.state.requests(job_id) if request.status == DONE]
    return sum(r.stop - r.start for r in done), sum(r.tokens if r.billed is None else r.billed for r in done)


def _why_missing(missing: int, texts: int, status: BatchJobStatus) -> str:
    """Why rows got no vector, the commonest reasons first, and what to do."""
    reasons: dict[str, int] = {}
    for reason in status.failed_requests.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    named = sorted(reasons.items(), key=lambda item: -item[1])[:3]
    why = "; ".join(f"{cut(reason, 200)} ({n:,} request{'s' if n > 1 else ''})" for reason, n in named)
    return (
        f"{missing:,} of {texts:,} chunks got no vector from the Batch API ({status.state}): "
        f"{why or 'their vectors are not in the cache'}. Nothing was written; the vectors that came back are "
        "cached. Resume the job (or run the same command again) to submit the rest."
    )


def batch_summary(status: BatchJobStatus) -> dict[str, Any]:
    """A job's batches for a status answer: each one while few, else counts by status."""
    listed = [
        {"batch_id": b.batch_id, "status": b.status, "total": b.total, "completed": b.completed, "failed": b.failed}
        for b in status.batches[:MAX_LISTED_BATCHES]
    ]
    by_status: dict[str, int] = {}
    for batch in status.batches:
        by_status[batch.status] = by_status.get(batch.status, 0) + 1
    return {
        "state": status.state,
        "texts": status.texts,
        "done": status.done,
        "failed_requests": len(status.failed_requests),
        "batches": listed,
        "batches_by_status": by_status,
        "more_batches": max(len(status.batches) - MAX_LISTED_BATCHES, 0),
    }


def build_engine(
    settings: Settings,
    providers: Callable[[str | None], EmbeddingProvider],
    *,
    poll_s: float | None = None,
    wait: bool = True,
    **_: Any,
) -> BatchJobEngine:
    """The engine `jobs.engine.build_engine("batch-api", ...)` finds by name."""
    options = default_options(settings)
    if poll_s is not None:  # polls start every poll_s seconds and back off to at most 30 times that
        options = dataclasses.replace(
            options, poll_initial=poll_s, poll_max=max(poll_s, min(options.poll_max, 30 * poll_s))
        )
    return BatchJobEngine(settings, providers, options=options, wait=wait)
