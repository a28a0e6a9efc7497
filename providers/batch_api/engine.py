"""The OpenAI Batch API as an engine for embedding jobs: plan, submit, poll, collect, resubmit.

```python
engine = BatchApiEngine(client, state=BatchState(dir / "batch_jobs.sqlite3"), cache=cache, ledger=ledger)
status = await engine.advance("job-1", texts)        # plans, submits, or re-attaches; one step
result = await engine.run("job-1", texts)            # advance with backoff until every batch is done
await engine.cancel("job-1")                         # cancels the remote batches
```

A job sends only the texts missing from the cache, packed into requests within the
`/v1/embeddings` limits and into files within the Batch API's. Each step writes the state first
(`BatchState`): a killed run, started again with the same job id and texts, re-attaches to its
batches and never submits one twice. Collected vectors go to the cache, which is where `run`
reads the job's answer from, in input order. Failed retryable requests and the unfinished part
of an expired batch go into follow-up batches, up to `max_tries`; the rest are reported by id
(`reopen` makes them pending again). Cost is the usage each completed request reports, at the batch
price; the budget is reserved when a batch is submitted and settled when it is collected. Usage
beyond what the texts can hold is recorded as billed, and stops the job at once (its batches are
cancelled).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt
import openai

from providers.base import EmbeddingResult, ProgressCallback, space_id
from providers.batch_api.collect import download_cap, implausible, verdicts
from providers.batch_api.options import BatchApiOptions
from providers.batch_api.packing import plan_files
from providers.batch_api.planning import plan_job, request_body
from providers.batch_api.remote import BatchRemote, RemoteBatch, is_transient, translate
from providers.batch_api.results import RequestOutcome, read_file
from providers.batch_api.state import FAILED, PENDING, BatchRow, BatchState, JobRow
from providers.batch_api.status import BatchCostEstimate, BatchJobResult, BatchJobStatus, job_status
from providers.cost import batch_price_per_million, price_per_million
from providers.errors import ConfigurationError, ProviderError, ProviderUnavailableError
from providers.redaction import safe_message
from providers.remote.ratelimit import Sleep
from providers.settings import Budget
from providers.storage.cache import EmbeddingCache, cache_key
from providers.storage.ledger import CostLedger, Reservation
from providers.text.tokens import Tokenizer, default_tokenizer

__all__ = ["BatchApiEngine"]

logger = logging.getLogger(__name__)

PROVIDER = "openai"


@dataclass
class _Polls:
    failures: int = 0
    changed: bool = False


class BatchApiEngine:
    """Embeds a job's texts through the OpenAI Batch API; every method is safe to call again after a crash."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        state: BatchState,
        cache: EmbeddingCache,
        model: str = "text-embedding-3-small",
        options: BatchApiOptions | None = None,
        ledger: CostLedger | None = None,
        budget: Budget | None = None,
        prices: dict[str, float] | None = None,
        tokenizer: Tokenizer | None = None,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.options = options or BatchApiOptions()
        self.model = model
        self.dimensions = self.options.resolved_dimensions(model)
        self.space = space_id(PROVIDER, model, self.dimensions, True)
        self.remote = BatchRemote(client, completion_window=self.options.completion_window)
        self.state = state
        self.cache = cache
        self.ledger = ledger
        self.budget = budget or Budget()
        self.prices = prices or {}
        self._tokenizer = tokenizer
        self._sleep = sleep
        self._polls = _Polls()
        self._work: dict[str, list[str]] = {}
        self._owner = uuid.uuid4().hex

    # public steps

    async def advance(self, job_id: str, texts: Sequence[str]) -> BatchJobStatus:
        """One step: plan the job if new, read every running batch, collect finished ones, submit what is due."""
        job = await self._job(job_id, texts)
        self._work_texts(job_id, texts)  # a resumed job must be given the texts it was planned with
        self._polls.changed = False
        running = False
        for row in self.state.batches(job_id):
            if not row.collected:
                running |= not await self._follow(job, self._renewed(row), texts)
        if not running and not job.cancelled and any(r.status == PENDING for r in self.state.requests(job_id)):
            await self._submit_round(job, texts)
        return self.status(job_id)

    async def run(
        self, job_id: str, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> BatchJobResult:
        """Advance with backoff until the job is finished; the vectors of `texts` in input order."""
        delay = self.options.poll_initial
        while True:
            status = await self.advance(job_id, texts)
            if progress is not None:
                await progress(status.done, status.texts)
            if status.finished:
                return self.result(job_id, texts)
            delay = self.options.poll_initial if self._polls.changed else min(delay * 2, self.options.poll_max)
            await self._sleep(delay)

    async def cancel(self, job_id: str) -> BatchJobStatus:
        """Stop the job: nothing more is submitted and its running batches are cancelled remotely."""
        self.state.mark_cancelled(job_id)
        for row in self.state.batches(job_id):
            if row.collected:
                continue
            batch_id = row.batch_id or await self._attach(job_id, row, create=False)
            if batch_id is not None:
                remote = await self.remote.cancel(batch_id)
                self.state.update_batch(row.id, remote.status, (remote.total, remote.completed, remote.failed))
        return self.status(job_id)

    def reopen(self, job_id: str) -> int:
        """Let a stopped job go on: undo its cancel, make its requests that failed for good pending; how many."""
        return self.state.reopen(job_id) if self.state.job(job_id) is not None else 0

    async def aclose(self) -> None:
        """Close the SDK client and the state database (the cache and ledger belong to the caller)."""
        await self.remote.client.close()
        self.state.close()

    def status(self, job_id: str) -> BatchJobStatus:
        """The job as its state records it (no remote call)."""
        job = self.state.job(job_id)
        if job is None:
            raise ConfigurationError(f"no Batch API job {job_id!r} in {self.state.path}.")
        return job_status(job, self.state.batches(job_id), self.state.requests(job_id))

    def result(self, job_id: str, texts: Sequence[str]) -> BatchJobResult:
        """The vectors of `texts` from the cache, in input order; positions without one are listed."""
        found = self.cache.get_many(self.space, list(texts), self.dimensions)
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        dropped = [0] * len(texts)
        missing = []
        for position, text in enumerate(texts):
            if (hit := found.get(text)) is not None:
                vectors[position] = hit.vector
                dropped[position] = hit.dropped_tokens
            else:
                missing.append(position)
        return BatchJobResult(
            status=self.status(job_id),
            vectors=vectors,
            missing=tuple(missing),
            space=self.space,
            dropped=tuple(dropped),
        )

    async def estimate(self, texts: Sequence[str]) -> BatchCostEstimate:
        """What the texts missing from the cache would cost, synchronously and through the Batch API."""
        unique = list(dict.fromkeys(texts))
        found = await anyio.to_thread.run_sync(self.cache.get_many, self.space, unique, self.dimensions)
        todo = [text for text in unique if text not in found]
        tokenizer = await self._loaded_tokenizer()
        limit = self.options.limits.request.max_input_tokens
        tokens = await anyio.to_thread.run_sync(lambda: sum(min(tokenizer.count(text), limit) for text in todo))
        sync = price_per_million(PROVIDER, self.model, self.prices)
        batch = batch_price_per_million(PROVIDER, self.model, self.prices)
        return BatchCostEstimate(
            provider=PROVIDER,
            model=self.model,
            texts=len(todo),
            cached=len(unique) - len(todo),
            tokens=tokens,
            usd=None if sync is None else tokens * sync / 1e6,
            batch_usd=None if batch is None else tokens * batch / 1e6,
        )

    # planning

    async def _job(self, job_id: str, texts: Sequence[str]) -> JobRow:
        job = self.state.job(job_id)
        if job is not None:
            if job.space != self.space:
                raise ConfigurationError(
                    f"Batch API job {job_id!r} embeds into {job.space}, not {self.space}: "
                    "resume it with the same model and dimensions, or start a new job."
                )
            return job
        job = JobRow(job_id, self.space, self.model, self.dimensions, False)
        unique = list(dict.fromkeys(texts))
        found = await anyio.to_thread.run_sync(self.cache.get_many, self.space, unique, self.dimensions)
        todo = [text for text in unique if text not in found]
        tokenizer = await self._loaded_tokenizer()
        plan = await anyio.to_thread.run_sync(plan_job, todo, tokenizer, self.options)
        keys = [cache_key(self.space, text) for text in todo]
        self.state.create_job(job, keys, plan.dropped, plan.requests)
        logger.info("Batch API job %s: %d texts to send in %d requests", job_id, len(todo), len(plan.requests))
        return job

    async def _loaded_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = await anyio.to_thread.run_sync(default_tokenizer)
        return self._tokenizer

    # submission

    async def _submit_round(self, job: JobRow, texts: Sequence[str]) -> None:
        pending = [r for r in self.state.requests(job.job_id) if r.status == PENDING]
        work = self._work_texts(job.job_id, texts)
        tokenizer = await self._loaded_tokenizer()
        lines = await anyio.to_thread.run_sync(
            lambda: [(r, request_body(r, work, tokenizer, self.model, self.dimensions, self.options)) for r in pending]
        )
        files = plan_files([(r.stop - r.start, len(line)) for r, line in lines], self.options.limits)
        price = batch_price_per_million(PROVIDER, self.model, self.prices) or 0.0
        for part in files:
            chosen = [lines[i] for i in part]
            usd = sum(r.tokens for r, _ in chosen) * price / 1e6
            reservation = self.ledger.reserve(usd, self.budget) if self.ledger is not None else None
            row_id = uuid.uuid4().hex
            try:
                file_id = await self.remote.upload(f"{job.job_id}-{row_id}.jsonl", b"".join(line for _, line in chosen))
            except BaseException:
                if reservation is not None and self.ledger is not None:
                    self.ledger.release(reservation)
                raise
            held = (reservation.id, reservation.usd, self._owner) if reservation is not None else None
            self.state.add_batch(job.job_id, row_id, file_id, [r.custom_id for r, _ in chosen], held)
            remote = await self.remote.create(file_id, _metadata(job.job_id, row_id))
            self.state.set_batch_id(row_id, remote.id)

    def _work_texts(self, job_id: str, texts: Sequence[str]) -> list[str]:
        """The job's work list as texts, checked once per engine against the keys it was planned with."""
        if (known := self._work.get(job_id)) is not None:
            return known
        by_key = {cache_key(self.space, text): text for text in texts}
        work = []
        for position, key in enumerate(self.state.work(job_id)):
            if (text := by_key.get(key)) is None:
                raise ConfigurationError(
                    f"Batch API job {job_id!r} was planned with other texts (text {position} of its work list is "
                    "not among these): resume it with the texts it was started with, or start a new job."
                )
            work.append(text)
        self._work[job_id] = work
        return work

    async def _attach(self, job_id: str, row: BatchRow, *, create: bool) -> str | None:
        """The batch of a row recorded before its batch id was: found remotely, else (if `create`) created now."""
        remote = await self.remote.find(row.input_file_id)
        if remote is None and create:
            remote = await self.remote.create(row.input_file_id, _metadata(job_id, row.id))
        if remote is None:
            return None
        self.state.set_batch_id(row.id, remote.id)
        return remote.id

    # polling and collection

    async def _follow(self, job: JobRow, row: BatchRow, texts: Sequence[str]) -> bool:
        """Read one running batch and collect it if it has finished; True once it is collected."""
        batch_id = row.batch_id or await self._attach(job.job_id, row, create=not job.cancelled)
        if batch_id is None:  # cancelled before it was ever created
            self.state.finish_batch(row.id, {r: (FAILED, "cancelled") for r in self.state.batch_requests(row.id)})
            self._release(row)
            return True
        try:
            remote = await self.remote.retrieve(batch_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            if not is_transient(exc):
                raise translate(exc, f"reading batch {batch_id}") from exc
            self._polls.failures += 1
            logger.warning("reading batch %s failed (%s); polling on", batch_id, safe_message(str(exc)))
            if self._polls.failures >= self.options.poll_failures:
                raise ProviderUnavailableError(
                    f"OpenAI failed {self._polls.failures} polls in a row; the batches keep running. "
                    "Run the job again later: it re-attaches to them."
                ) from exc
            return False
        self._polls.failures = 0
        if remote.status != row.status or remote.completed != row.completed:
            self._polls.changed = True
        self.state.update_batch(row.id, remote.status, (remote.total, remote.completed, remote.failed))
        if not remote.finished:
            return False
        await self._collect(job, row, remote, texts)
        return True

    async def _collect(self, job: JobRow, row: BatchRow, remote: RemoteBatch, texts: Sequence[str]) -> None:
        requests = {r.custom_id: r for r in self.state.requests(job.job_id) if r.batch == row.id}
        outcomes: dict[str, RequestOutcome] = {}
        for file_id in (remote.error_file_id, remote.output_file_id):  # an answer in the output file wins
            if file_id:
                text = await self.remote.download(file_id, download_cap(requests, self.dimensions))
                outcomes.update(await anyio.to_thread.run_sync(read_file, text, self.dimensions))
        # Only answers to this batch's own requests count: a custom_id names its texts exactly.
        done = [o for o in outcomes.values() if o.ok and o.custom_id in requests]
        if done:
            work = self._work_texts(job.job_id, texts)
            await anyio.to_thread.run_sync(self._cache_vectors, job, done, work)
        self._settle(row, done)
        outcome = verdicts(
            remote,
            requests,
            outcomes,
            {o.custom_id for o in done},
            cancelled=job.cancelled,
            max_tries=self.options.max_tries,
        )
        self.state.finish_batch(row.id, outcome, {o.custom_id: o.tokens for o in done})
        if overbilled := implausible(requests, done):
            await self.cancel(job.job_id)  # recorded as billed above; nothing more is spent on this job
            worst = max(overbilled, key=lambda o: o.tokens)
            raise ProviderError(
                f"the Batch API reported {worst.tokens:,} tokens for request {worst.custom_id}, which we count as "
                f"{requests[worst.custom_id].tokens:,}: not a plausible count. It is recorded as billed, and the "
                f"job's batches are cancelled; check the usage on OpenAI's dashboard before resuming the job."
            )

    def _cache_vectors(self, job: JobRow, done: list[RequestOutcome], work: list[str]) -> None:
        dropped = self.state.dropped(job.job_id)
        positions = [p for o in done for p in o.positions]
        vectors = np.concatenate([o.vectors for o in done if o.vectors is not None])
        self.cache.put_many(self.space, [work[p] for p in positions], vectors, [dropped.get(p, 0) for p in positions])

    def _settle(self, row: BatchRow, done: list[RequestOutcome]) -> None:
        """Replace the batch's reservation by what its completed requests reported (and are billed)."""
        if self.ledger is None:
            return
        if not done:
            self._release(row)
            return
        tokens = sum(o.tokens for o in done)
        price = batch_price_per_million(PROVIDER, self.model, self.prices)
        vectors: npt.NDArray[np.float32] = np.concatenate([o.vectors for o in done if o.vectors is not None])
        result = EmbeddingResult(
            vectors=vectors,
            provider=PROVIDER,
            model=self.model,
            tokens=tokens,
            requests=len(done),
            cost_usd=None if price is None else tokens * price / 1e6,
        )
        if row.reservation_id is not None:
            self.ledger.settle(Reservation(row.reservation_id, row.reserved_usd), result)
        else:
            self.ledger.record(result)

    def _renewed(self, row: BatchRow) -> BatchRow:
        """Keep a running batch's budget held: renewed by each new engine (a restarted run) and every half hour.

        The spend was checked against the hard limit at submission and is committed now, so the
        new reservation is taken without a limit; it only keeps later submissions honest.
        """
        if self.ledger is None or row.reservation_id is None:
            return row
        if row.reserved_by == self._owner and self.state.now() - row.reserved_at < self.options.renew_reservation_s:
            return row
        renewed = self.ledger.reserve(row.reserved_usd, Budget(period=self.budget.period))
        self.ledger.release(Reservation(row.reservation_id, row.reserved_usd))
        self.state.renew_reservation(row.id, renewed.id, self._owner)
        return dataclasses.replace(row, reservation_id=renewed.id, reserved_by=self._owner)

    def _release(self, row: BatchRow) -> None:
        if self.ledger is not None and row.reservation_id is not None:
            self.ledger.release(Reservation(row.reservation_id, row.reserved_usd))


def _metadata(job_id: str, row_id: str) -> dict[str, str]:
    # The API takes metadata values of at most 512 characters.
    return {"signal_hub_job": job_id[:512], "signal_hub_batch": row_id}
