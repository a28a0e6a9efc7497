"""The remote-request engine: packing, pacing, retries and partial results for any HTTP provider.

A provider subclasses `RemoteProvider` and supplies three things:

- `_request(texts, input_type)`: send one request, return a `Reply` (vectors, usage, headers);
- `_classify(exc)`: what one of its failures means (`Failure`: retry it? split it? refused?),
  and `_translate(exc, attempts)`: the one place its exceptions become ours (outage, quota,
  input, configuration);
- its limits: `options` (`RemoteOptions`) and a tokenizer.

One call goes through four steps:

1. *Check*: blank texts are refused, naming their positions, before any request.
2. *Plan* (`batching`, `tokens`): cut or refuse over-long texts, count tokens offline, and pack
   requests within the endpoint's limits as workers take them (under a TPM limit at most 1/32 of a
   minute's tokens, `batching.request_cap`). While no limit is known a small first request goes
   alone and its answer tells them. A request still too large is sent again in two halves.
3. *Send*: `concurrency` workers take requests in order; each waits for the `limiter`, and
   tenacity retries it alone on what `_classify` calls transient, honouring the server's
   retry-after, within `max_attempts` and `max_retry_seconds`. A refused connection (nothing
   listens) is an outage after `refused_attempts`.
4. *Collect*: each answer (read within `answer_cap` by `capped.capped_client`) is checked (usage
   beyond `usage.plausible_tokens` of our count is recorded as billed, then ends the call), put at
   its texts' positions (output order is input order) and handed to `on_request` at once: a
   caller that records and caches each piece keeps what was paid for if the process dies.

A call that fails after some requests succeeded raises a `ProviderError` whose `partial` holds
what they returned, with `partial_indexes` naming their texts. Nothing new is sent after such a
failure, but requests already in flight get `finish_in_flight` seconds to come back.
"""

from __future__ import annotations

import collections
import logging
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from providers.base import EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback, RequestHook
from providers.cost import cost_usd
from providers.errors import EmbeddingError, ProviderError
from providers.remote.batching import BatchPacker, RequestLimits, overlong_items, request_cap
from providers.remote.capped import answer_bytes, response_cap
from providers.remote.options import RemoteOptions
from providers.remote.ratelimit import Clock, RateLimiter, Sleep, paused_if_long
from providers.remote.retry import Failure, Reply, retry_policy
from providers.remote.usage import check_usage
from providers.text.tokens import Tokenizer, default_tokenizer
from providers.text.validation import reject_blank

__all__ = ["RATE_LIMITED", "Failure", "RemoteProvider", "Reply"]

logger = logging.getLogger(__name__)

RATE_LIMITED: collections.Counter[str] = collections.Counter()
"""429 answers received by this process, by provider name (the HTTP server's metrics read it)."""

# Texts counted per trip to a worker thread: the first request can leave after one step.
_COUNT_STEP = 256
# While no limit is known, the first request holds at most this many tokens and goes alone: its
# answer's headers tell the limits (and its usage the token ratio) before the rest is packed.
_PROBE_TOKENS = 1024
# JSON quotes, comma and escapes: bytes a text takes on the wire beyond its UTF-8 bytes (an allowance).
_WIRE_OVERHEAD = 8


@dataclass
class _Run:
    total: int
    done: int = 0
    tokens: int = 0
    requests: int = 0
    estimated: bool = False
    error: Exception | None = None
    finished: list[int] = field(default_factory=list)
    """Positions of the texts whose vectors came back (and were paid for), in completion order."""


class RemoteProvider(EmbeddingProvider):
    """An embedding API over HTTP: the engine. Subclasses send one request and say what failures mean."""

    label: str = "the server"
    """How messages and logs name the service, e.g. "OpenAI"."""

    def __init__(
        self,
        model: str,
        *,
        options: RemoteOptions,
        tokenizer: Tokenizer | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(model)
        self.options = options
        self._tokenizer = tokenizer
        self._clock = clock
        self._sleep = sleep
        self.limiter = limiter or RateLimiter(
            options.rpm, options.tpm, window=options.rate_window, clock=clock, sleep=sleep
        )
        self._learnt_inputs: int | None = None
        """Texts per request the endpoint has shown it takes at most (lowered when it finds one too large)."""
        self._answered = False
        """Whether a request of this provider has come back (and with it any limits the endpoint reports)."""

    # what a provider supplies

    @abstractmethod
    async def _request(self, texts: list[str], input_type: InputType) -> Reply:
        """Send one request for `texts` embedded as `input_type`; raise the transport's own exceptions."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> Failure | None:
        """What a failed attempt means, or None when `exc` is not a failure of the request (a bug: raised as is)."""

    @abstractmethod
    def _translate(self, exc: BaseException, *, attempts: int) -> EmbeddingError:
        """The one place this provider's exceptions become ours; messages never carry a key."""

    async def _prepare(self) -> None:
        """Check what must hold before the first request (a key, say); nothing is sent if it raises."""

    def _lower_limit(self, texts: int) -> None:
        """The endpoint found a request of `texts` texts too large (providers that learn their limits)."""

    def answer_cap(self, texts: int) -> int:
        """Bytes, decompressed, of the largest plausible answer to a request of `texts` texts."""
        return answer_bytes(texts, self.dimensions)

    # the engine

    def limits(self) -> RequestLimits:
        """The request limits in force: the configured ones, lowered to what the endpoint has shown."""
        limits = self.options.limits
        if self._learnt_inputs is not None and self._learnt_inputs < limits.max_inputs:
            limits = replace(limits, max_inputs=self._learnt_inputs)
        return limits

    async def embed(
        self, texts: Sequence[str], *, input_type: InputType = "document", progress: ProgressCallback | None = None
    ) -> EmbeddingResult:
        return await self.embed_each(texts, input_type=input_type, progress=progress)

    async def embed_each(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        progress: ProgressCallback | None = None,
        on_request: RequestHook | None = None,
    ) -> EmbeddingResult:
        texts = list(texts)
        reject_blank(texts)
        if not texts:
            return self._result(np.empty((0, self.dimensions), dtype=np.float32), _Run(total=0), {}, input_type)
        await self._prepare()
        tokenizer = await self._loaded_tokenizer()
        # Every refusal (blank, or over-long under the "error" policy) comes before the first request.
        truncated = await anyio.to_thread.run_sync(self._cut_overlong, texts, tokenizer)
        counts = [0] * len(texts)
        vectors: npt.NDArray[np.float32] | None = None
        run = _Run(total=len(texts))
        # Requests are packed as workers take them, each with the limits known by then.
        send, receive = anyio.create_memory_object_stream[list[int]](0)
        limits = self.limits()
        sized = limits.max_request_bytes is not None
        learnt = anyio.Event()
        learning = not self._answered and self.limiter.rpm is None and self.limiter.tpm is None
        if not learning:
            learnt.set()

        async def plan() -> None:
            # Requests leave as soon as they are packed; counting the rest goes on meanwhile.
            cap = _PROBE_TOKENS if learning else self._request_cap()
            packer = BatchPacker(limits, cap)
            async with send:
                for start in range(0, len(texts), _COUNT_STEP):
                    if run.error is not None:
                        return
                    step = texts[start : start + _COUNT_STEP]
                    counts[start : start + len(step)] = await anyio.to_thread.run_sync(_count_all, tokenizer, step)
                    for index in range(start, start + len(step)):
                        size = _wire_bytes(texts[index]) if sized else 0
                        if batch := packer.add(index, counts[index], size):
                            await send.send(batch)
                            await learnt.wait()  # the first request's answer tells the limits
                            packer.cap = self._request_cap()
                if batch := packer.flush():
                    await send.send(batch)

        async def keep(batch: list[int], reply: Reply, estimated: int) -> None:
            # Called per billed request, so a call that fails later still knows what it paid for.
            nonlocal vectors
            if vectors is None:  # the first answer fixes the length (providers that learn it)
                vectors = np.empty((len(texts), reply.vectors.shape[1]), dtype=np.float32)
            vectors[batch] = reply.vectors
            used = estimated if reply.tokens is None else reply.tokens
            run.finished.extend(batch)
            run.done += len(batch)
            run.tokens += used
            run.requests += 1
            run.estimated |= reply.tokens is None
            if on_request is not None:
                piece = _Run(total=len(batch), done=len(batch), tokens=used, requests=1, estimated=reply.tokens is None)
                kept = {n: truncated[i] for n, i in enumerate(batch) if i in truncated}
                with anyio.CancelScope(shield=True):  # what was paid for is written down, even when cancelled
                    await on_request(batch, self._result(reply.vectors, piece, kept, input_type))
            check_usage(self.label, reply.tokens, estimated, len(batch))  # recorded as billed above; then stop

        async def work() -> None:
            async for batch in receive:  # one shared stream: each request is taken by one worker, in order
                if run.error is not None:
                    return  # the call has failed: send nothing more
                try:
                    await self._send(texts, counts, batch, keep, input_type)
                finally:
                    self._answered = True
                    learnt.set()
                if progress is not None:
                    await progress(run.done, run.total)

        async def guarded(job: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
            # The first failure ends the call and is raised as itself, not inside an ExceptionGroup.
            # Requests already sent get a moment to finish: their vectors are paid for either way.
            try:
                await job()
            except Exception as exc:
                run.error = run.error or exc
                scope.deadline = min(scope.deadline, anyio.current_time() + self.options.finish_in_flight)

        async with receive, anyio.create_task_group() as group:
            group.start_soon(guarded, plan, group.cancel_scope)
            for _ in range(self.options.concurrency):
                group.start_soon(guarded, work, group.cancel_scope)
        if vectors is None:
            vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        if run.error is not None:
            raise self._with_partial(run.error, vectors, run, truncated, input_type)
        return self._result(vectors, run, truncated, input_type)

    async def estimate_tokens(self, texts: Sequence[str]) -> int:
        """Tokens `texts` will cost as the tokenizer counts them, over-long ones cut to the limit."""
        tokenizer = await self._loaded_tokenizer()
        limit = self.options.limits.max_input_tokens
        counts = await anyio.to_thread.run_sync(_count_all, tokenizer, list(texts))
        return sum(min(count, limit) for count in counts)

    def _result(
        self, vectors: npt.NDArray[np.float32], run: _Run, truncated: dict[int, int], input_type: InputType
    ) -> EmbeddingResult:
        return EmbeddingResult(
            vectors=vectors,
            provider=self.name,
            model=self.model,
            tokens=run.tokens,
            tokens_estimated=run.estimated,
            requests=run.requests,
            normalized=self.normalized,
            truncated=truncated,
            # At list price; the service prices it again with the configured prices.
            cost_usd=cost_usd(self.name, self.model, run.tokens),
            endpoint=self.endpoint,
            qualifiers=self.space_qualifiers(input_type),
        )

    def _with_partial(
        self, error: Exception, vectors: npt.NDArray[np.float32], run: _Run, truncated: dict[int, int], kind: InputType
    ) -> Exception:
        """Attach to a provider failure the vectors of the requests that had succeeded before it.

        Only a `ProviderError` can carry them; an input or configuration error means the call
        itself was wrong, and its caller has nothing to retry elsewhere.
        """
        if not isinstance(error, ProviderError) or not run.finished or error.partial is not None:
            return error
        indexes = tuple(sorted(run.finished))
        position = {index: n for n, index in enumerate(indexes)}
        # `truncated` of the partial result is keyed by position within `partial_indexes`.
        kept = {position[i]: dropped for i, dropped in truncated.items() if i in position}
        error.partial = self._result(vectors[list(indexes)], run, kept, kind)
        error.partial_indexes = indexes
        return error

    # planning

    async def _loaded_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            # Loading cl100k_base reads and checks a 1.6 MB file: not on the event loop.
            self._tokenizer = await anyio.to_thread.run_sync(default_tokenizer)
        return self._tokenizer

    def _cut_overlong(self, texts: list[str], tokenizer: Tokenizer) -> dict[int, int]:
        """Apply the over-long policy in place; returns index → tokens dropped. Runs in a worker thread.

        Only texts longer than the limit in UTF-8 bytes are counted here: no text has more
        tokens than bytes, so the others cannot be over the limit.
        """
        limits = self.options.limits
        suspects = {
            i: tokenizer.count(text)
            for i, text in enumerate(texts)
            if len(text) > limits.max_input_tokens // 4
            and len(text.encode("utf-8", "surrogatepass")) > limits.max_input_tokens
        }
        truncated: dict[int, int] = {}
        for index in overlong_items(suspects, limits, self.options.overlong):
            cut = tokenizer.truncate(texts[index], limits.max_input_tokens)
            truncated[index] = suspects[index] - tokenizer.count(cut)
            texts[index] = cut
        reject_blank(texts, after="truncation")
        return truncated

    def _request_cap(self) -> int:
        """Tokens per request (see `batching.request_cap`), with the limits and token ratio known now."""
        return request_cap(self.options.limits, self.options.request_tokens, self.limiter.tpm, self.limiter.token_ratio)

    # sending

    async def _send(
        self,
        texts: list[str],
        counts: list[int],
        batch: list[int],
        keep: Callable[[list[int], Reply, int], Awaitable[None]],
        input_type: InputType,
    ) -> None:
        """One request for the texts at `batch`, with its retries; `keep(batch, reply, estimated)` takes the answer.

        An endpoint that finds the request too large gets it again in two halves (each kept as it succeeds).
        """
        estimated = sum(counts[i] for i in batch)
        started = self._clock()
        retrying = retry_policy(self.options, self._classify, self._clock, self._sleep, started, self.label)
        try:
            async for attempt in retrying:
                with attempt:
                    left = self.options.max_retry_seconds - (self._clock() - started)
                    reply = await self._attempt([texts[i] for i in batch], estimated, input_type, within=left)
                outcome = attempt.retry_state.outcome
                if outcome is not None and not outcome.failed:  # else tenacity holds the error: next attempt
                    await keep(batch, reply, estimated)
                    return
        except Exception as exc:
            failure = self._classify(exc)
            if failure is None:
                raise
            if not failure.too_large or len(batch) < 2:
                error = self._translate(exc, attempts=retrying.statistics.get("attempt_number", 1))
                raise paused_if_long(error, failure, self.options.max_retry_seconds) from exc
            logger.info("%s found a request of %d texts too large; sending it in two halves", self.label, len(batch))
            self._lower_limit(len(batch))
        half = len(batch) // 2
        await self._send(texts, counts, batch[:half], keep, input_type)
        await self._send(texts, counts, batch[half:], keep, input_type)

    async def _attempt(
        self, texts: list[str], estimated: int, input_type: InputType, *, within: float | None = None
    ) -> Reply:
        # A pause or a queue longer than the request's retry budget is an outage, not a wait.
        charged = await self.limiter.acquire(estimated, within=within)
        try:
            # The transport's timeout covers each network phase; this bounds the whole request.
            with anyio.fail_after(self.options.request_timeout), response_cap(self.answer_cap(len(texts))):
                reply = await self._request(texts, input_type)
        except BaseException as exc:
            failure = self._classify(exc) if isinstance(exc, Exception) else None
            # A refused request counted no tokens; a timeout or dropped connection may have.
            self.limiter.settle(charged, estimated, 0 if failure is not None and failure.answered else None)
            if failure is not None:
                self.limiter.update_from_headers(failure.headers)
                RATE_LIMITED[self.name] += failure.rate_limited
                if failure.rate_limited and failure.retry_after is not None:
                    self.limiter.pause(failure.retry_after)
            raise
        self.limiter.settle(charged, estimated, reply.tokens)
        self.limiter.update_from_headers(reply.headers)
        if reply.vectors.shape[0] != len(texts):  # pragma: no cover - providers check their answers
            raise ProviderError(f"{self.label} returned {reply.vectors.shape[0]} vectors for {len(texts)} texts.")
        return reply


def _count_all(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    return [tokenizer.count(text) for text in texts]


def _wire_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) + _WIRE_OVERHEAD
