"""OpenAI embeddings (or any OpenAI-compatible endpoint) through the official `openai` SDK.

```python
provider = OpenAIProvider("text-embedding-3-small", options=OpenAIOptions(tpm=1_000_000))
result = await provider.embed(["def f(): ...", "class A: ..."])
```

One call goes through four small steps:

1. *Check*: empty or whitespace-only texts are refused, naming their positions, before any request.
2. *Plan* (`batching`, `tokens`): cut or refuse over-long texts, then count tokens offline and
   pack the texts into requests within the endpoint's three limits. Requests leave as soon as
   they are packed, while the rest is still being counted. Under a TPM limit a request holds
   at most 1/32 of a minute's tokens: the benchmark measured that many mid-sized requests in
   flight beat a few big ones. An endpoint that still finds a request too large (it counts
   tokens differently) gets it again in two halves.
3. *Send*: `concurrency` workers take requests in order; each waits for the `RateLimiter`, and
   tenacity retries it alone on 429 `rate_limit_exceeded`, 408, 5xx, timeouts and dropped
   connections, honouring `retry-after-ms`/`retry-after`, within `max_attempts` and
   `max_retry_seconds`. The SDK never retries (`max_retries=0`): tenacity is the one owner.
4. *Collect*: each answer is checked (count, `index`, dimensions, finite values) and written into
   a preallocated array at its texts' positions, so the output order is the input order.

SDK exceptions become our errors in exactly one place, `_translate`. The API key is read at the
first request (`OPENAI_API_KEY` unless one was passed) and is never put in a message or a log.

`EmbeddingResult.tokens` is the sum of `usage.prompt_tokens` the API reported; `requests` counts
the requests that succeeded (the billed ones), not failed attempts; `truncated` maps the index of
each cut text to the tokens dropped, as the provider's tokenizer counts them (exact with
cl100k_base, an over-count with the UTF-8 byte estimate).

A call that fails after some of its requests succeeded raises a `ProviderError` whose `partial`
holds what those requests returned (and cost), with `partial_indexes` naming their texts, so the
caller can keep what was paid for. Nothing new is sent after such a failure, but requests already
in flight get `finish_in_flight` seconds (2 s) to come back, and what they return joins `partial`.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import numpy as np
import numpy.typing as npt
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from .base import EmbeddingProvider, EmbeddingResult, ProgressCallback
from .batching import BatchPacker, overlong_items
from .cost import cost_usd
from .errors import (
    AuthenticationError,
    ConfigurationError,
    EmbeddingError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from .openai_options import OpenAIOptions
from .pacing import build_limiter
from .ratelimit import Clock, Sleep, parse_retry_after
from .settings import DEFAULT_OPENAI_MODEL, Settings
from .tokens import Tokenizer, default_tokenizer

__all__ = ["MODEL_DIMENSIONS", "OpenAIOptions", "OpenAIProvider"]

logger = logging.getLogger(__name__)

MODEL_DIMENSIONS: Mapping[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Each known model's native vector length."""
_SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
_MAX_POSITIONS_NAMED = 10
# Texts counted per trip to a worker thread: the first request can leave after one step.
_COUNT_STEP = 256
# Under a TPM limit, a request holds at most this share of a minute's tokens (see `_request_cap`),
# and while no TPM limit is known, at most this many tokens.
_REQUESTS_PER_TPM = 32
_UNPACED_REQUEST_TOKENS = 32_768


@dataclass
class _Progress:
    total: int
    done: int = 0
    tokens: int = 0
    requests: int = 0
    error: Exception | None = None
    finished: list[int] = field(default_factory=list)
    """Positions of the texts whose vectors came back (and were paid for), in completion order."""


class OpenAIProvider(EmbeddingProvider):
    """Embeds with OpenAI's embedding models over HTTP, paced, retried and in input order."""

    name = "openai"

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        options: OpenAIOptions | None = None,
        tokenizer: Tokenizer | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        http_client: httpx2.AsyncClient | None = None,
        pacing_dir: Path | None = None,
    ) -> None:
        if model not in MODEL_DIMENSIONS:
            raise ConfigurationError(f"unknown OpenAI model {model!r}; choose one of: {', '.join(MODEL_DIMENSIONS)}.")
        self.options = options or OpenAIOptions()
        wanted, native = self.options.dimensions, MODEL_DIMENSIONS[model]
        if wanted is not None and model not in _SHORTENABLE and wanted != native:
            raise ConfigurationError(f"{model} makes {native}-dimension vectors only; use a text-embedding-3 model.")
        if wanted is not None and not 1 <= wanted <= native:
            raise ConfigurationError(f"dimensions must be between 1 and {native} for {model}.")
        # Sent only to the models that take it (ada-002 refuses the parameter even at 1536).
        self._dimensions_param = wanted if model in _SHORTENABLE else None
        super().__init__(model)
        self._api_key = api_key
        self._base_url = base_url
        self._tokenizer = tokenizer
        self._clock = clock
        self._sleep = sleep
        self._http_client = http_client
        self._sdk: openai.AsyncOpenAI | None = None
        # With a data directory, every process using this endpoint and key paces with the others.
        self.limiter = build_limiter(
            self.options.rpm,
            self.options.tpm,
            window=self.options.rate_window,
            clock=clock,
            sleep=sleep,
            shared_in=pacing_dir,
            endpoint=base_url or "https://api.openai.com/v1",
            key=lambda: self._api_key,
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self._base_url!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, model: str | None = None, *, options: OpenAIOptions | None = None
    ) -> OpenAIProvider:
        """Build the provider for a configured model; the key is not needed until the first request."""
        return cls(
            model or settings.openai_model,
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            options=options,
            pacing_dir=settings.resolved_data_dir if settings.shared_pacing else None,
        )

    @property
    def dimensions(self) -> int:
        return self.options.dimensions or MODEL_DIMENSIONS[self.model]

    async def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> EmbeddingResult:
        texts = list(texts)
        _reject_blank(texts)
        if not texts:
            return self._result(np.empty((0, self.dimensions), dtype=np.float32), _Progress(total=0), {})
        client = self._client()
        tokenizer = await self._loaded_tokenizer()
        # Every refusal (blank, or over-long under the "error" policy) comes before the first request.
        truncated = await anyio.to_thread.run_sync(self._cut_overlong, texts, tokenizer)
        counts = [0] * len(texts)
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        run = _Progress(total=len(texts))
        send, receive = anyio.create_memory_object_stream[list[int]](math.inf)

        async def plan() -> None:
            # Requests leave as soon as they are packed; counting the rest goes on meanwhile.
            packer = BatchPacker(replace(self.options.limits, max_request_tokens=self._request_cap()))
            async with send:
                for start in range(0, len(texts), _COUNT_STEP):
                    if run.error is not None:
                        return
                    step = texts[start : start + _COUNT_STEP]
                    counts[start : start + len(step)] = await anyio.to_thread.run_sync(_count_all, tokenizer, step)
                    for index in range(start, start + len(step)):
                        if batch := packer.add(index, counts[index]):
                            await send.send(batch)
                if batch := packer.flush():
                    await send.send(batch)

        def keep(batch: list[int], batch_vectors: npt.NDArray[np.float32], used: int) -> None:
            # Called per billed request, so a call that fails later still knows what it paid for.
            vectors[batch] = batch_vectors
            run.finished.extend(batch)
            run.done += len(batch)
            run.tokens += used
            run.requests += 1

        async def work() -> None:
            async for batch in receive:  # one shared stream: each request is taken by one worker, in order
                if run.error is not None:
                    return  # the call has failed: send nothing more
                await self._send(client, texts, counts, batch, keep)
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
        if run.error is not None:
            raise self._with_partial(run.error, vectors, run, truncated)
        return self._result(vectors, run, truncated)

    async def estimate_tokens(self, texts: Sequence[str]) -> int:
        """Tokens `texts` will cost as the tokenizer counts them, over-long ones cut to the limit."""
        tokenizer = await self._loaded_tokenizer()
        limit = self.options.limits.max_input_tokens
        counts = await anyio.to_thread.run_sync(_count_all, tokenizer, list(texts))
        return sum(min(count, limit) for count in counts)

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    def _result(self, vectors: npt.NDArray[np.float32], run: _Progress, truncated: dict[int, int]) -> EmbeddingResult:
        return EmbeddingResult(
            vectors=vectors,
            provider=self.name,
            model=self.model,
            tokens=run.tokens,
            requests=run.requests,
            normalized=True,
            truncated=truncated,
            cost_usd=cost_usd(self.name, self.model, run.tokens),
        )

    def _with_partial(
        self, error: Exception, vectors: npt.NDArray[np.float32], run: _Progress, truncated: dict[int, int]
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
        error.partial = self._result(vectors[list(indexes)], run, kept)
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
        _reject_blank(texts, after="truncation")
        return truncated

    def _request_cap(self) -> int:
        """Tokens per request: the endpoint's limit, and under a TPM limit a small share of it.

        Many mid-sized requests beat a few huge ones under a TPM limit: the burst an idle bucket
        allows is spread over several round trips, so the limiter learns how the API counts
        before the bucket runs low; a request the API counts higher than estimated overshoots
        by less; and the last request, which the whole call waits for, is short.
        """
        limits = self.options.limits
        # Where the API has been counting more tokens than we do, leave it room for that.
        scale = max(1.0, self.limiter.token_ratio)
        cap = self.options.request_tokens or limits.max_request_tokens
        if self.options.request_tokens is None:
            tpm = self.limiter.tpm
            cap = min(cap, int(tpm / _REQUESTS_PER_TPM) if tpm is not None else _UNPACED_REQUEST_TOKENS)
        return max(limits.max_input_tokens, int(min(cap, limits.max_request_tokens) / scale))

    # sending

    def _client(self) -> openai.AsyncOpenAI:
        if self._sdk is None:
            key = self._api_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                # Like a rejected key, and answered the same way: by the fallback provider, if any.
                raise AuthenticationError(
                    "no OpenAI API key: set OPENAI_API_KEY (or SIGNAL_HUB_PROVIDER=local to embed without one)."
                )
            self._api_key = key
            self._sdk = openai.AsyncOpenAI(
                api_key=key,
                base_url=self._base_url,
                max_retries=0,  # tenacity is the one owner of retries
                timeout=self.options.request_timeout,
                http_client=self._http_client,
            )
        return self._sdk

    async def _send(
        self,
        client: openai.AsyncOpenAI,
        texts: list[str],
        counts: list[int],
        batch: list[int],
        keep: Callable[[list[int], npt.NDArray[np.float32], int], None],
    ) -> None:
        """One request for the texts at `batch`, with its retries; `keep(batch, vectors, tokens)` takes the answer.

        An endpoint that counts tokens differently may still find the request too large; then
        the request is split in two and each half sent on its own (each half kept as it succeeds).
        """
        estimated = sum(counts[i] for i in batch)
        started = self._clock()
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            wait=self._wait,
            stop=lambda state: self._should_stop(state, started),
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    vectors, used = await self._attempt(client, [texts[i] for i in batch], estimated)
                    keep(batch, vectors, used)
                    return
        except openai.APIStatusError as exc:
            if len(batch) < 2 or not _is_too_large(exc):
                raise self._translate(exc, attempts=retrying.statistics.get("attempt_number", 1)) from exc
            logger.info("OpenAI found a request of %d texts too large; sending it in two halves", len(batch))
        except (openai.OpenAIError, TimeoutError) as exc:
            raise self._translate(exc, attempts=retrying.statistics.get("attempt_number", 1)) from exc
        half = len(batch) // 2
        await self._send(client, texts, counts, batch[:half], keep)
        await self._send(client, texts, counts, batch[half:], keep)

    async def _attempt(
        self, client: openai.AsyncOpenAI, texts: list[str], estimated: int
    ) -> tuple[npt.NDArray[np.float32], int]:
        charged = await self.limiter.acquire(estimated)
        used: int | None = None  # unknown unless the API answers
        extra: dict[str, Any] = {"dimensions": self._dimensions_param} if self._dimensions_param else {}
        try:
            # The SDK timeout covers each network phase; this bounds the whole request.
            with anyio.fail_after(self.options.request_timeout):
                raw = await client.embeddings.with_raw_response.create(
                    input=texts, model=self.model, encoding_format=self.options.encoding_format, **extra
                )
            response = raw.parse()
            used = response.usage.prompt_tokens
        except openai.APIStatusError as exc:
            used = 0  # the API refused the request, so it counted none of its tokens
            self.limiter.settle(charged, estimated, used)
            self.limiter.update_from_headers(exc.response.headers)
            if exc.status_code == 429 and not _is_quota(exc):
                pause = parse_retry_after(exc.response.headers)
                if pause is not None:
                    self.limiter.pause(pause)
            raise
        finally:
            if used is None:
                self.limiter.settle(charged, estimated, None)
        self.limiter.settle(charged, estimated, used)
        self.limiter.update_from_headers(raw.headers)
        return _collect(response, len(texts), self.dimensions), used

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: what the server asked for, else backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            hinted = parse_retry_after(exc.response.headers)
            if hinted is not None:
                return hinted
        ceiling = min(self.options.backoff_max, self.options.backoff_initial * 2.0 ** (state.attempt_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _should_stop(self, state: RetryCallState, started: float) -> bool:
        if state.attempt_number >= self.options.max_attempts:
            return True
        # Give up now rather than sleep past the time budget and fail anyway.
        return self._clock() - started + (state.upcoming_sleep or 0.0) > self.options.max_retry_seconds

    def _translate(self, exc: BaseException, *, attempts: int) -> EmbeddingError:
        """The one place SDK exceptions become ours; messages never carry the key."""
        detail = self._redact(_api_message(exc))
        tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return AuthenticationError(
                f"OpenAI rejected the API key ({exc.status_code}): {detail} Check OPENAI_API_KEY and its permissions."
            )
        if isinstance(exc, openai.RateLimitError) and _is_quota(exc):
            return QuotaExceededError(
                f"the OpenAI account has no credit left: {detail} Add credit or raise the usage limit, then retry."
            )
        if isinstance(exc, openai.RateLimitError):
            return RateLimitError(
                f"OpenAI kept rate limiting the request {tried}: {detail} "
                "Wait a minute, or lower SIGNAL_HUB_OPENAI_TPM / SIGNAL_HUB_OPENAI_RPM to your account's limits."
            )
        if isinstance(exc, openai.NotFoundError):
            return ConfigurationError(
                f"OpenAI does not know model {self.model!r} at this endpoint: {detail} "
                "Check SIGNAL_HUB_OPENAI_MODEL and OPENAI_BASE_URL."
            )
        if isinstance(exc, openai.APIStatusError) and exc.status_code < 500 and exc.status_code not in (408, 429):
            return InputError(f"OpenAI refused the request ({exc.status_code}): {detail}")
        if isinstance(exc, openai.APIStatusError | openai.APIConnectionError | TimeoutError):
            what = f"answered {exc.status_code}" if isinstance(exc, openai.APIStatusError) else _connection_problem(exc)
            return ProviderUnavailableError(
                f"OpenAI {what} {tried}: {detail} Check the network and OPENAI_BASE_URL, or retry later."
            )
        return ProviderError(f"the OpenAI SDK failed: {detail}")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _count_all(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    return [tokenizer.count(text) for text in texts]


def _is_quota(exc: openai.APIStatusError) -> bool:
    return exc.code == "insufficient_quota" or exc.type == "insufficient_quota"


def _is_too_large(exc: openai.APIStatusError) -> bool:
    """The endpoint refused the request for its total size (not for one over-long text)."""
    if exc.status_code == 413:
        return True
    return exc.status_code == 400 and (
        exc.code == "max_tokens_per_request" or "tokens per request" in _api_message(exc).lower()
    )


def _is_retryable(exc: BaseException) -> bool:
    """Transient failures only: what a later identical request could get through."""
    if isinstance(exc, openai.RateLimitError):
        return not _is_quota(exc)
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 408 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | TimeoutError)  # APITimeoutError included


def _api_message(exc: BaseException) -> str:
    if isinstance(exc, openai.APIError):
        body = exc.body
        if isinstance(body, Mapping) and isinstance(body.get("message"), str):
            return str(body["message"])
        return exc.message
    return str(exc) or type(exc).__name__


def _connection_problem(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "did not answer in time"
    return "could not be reached"


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    status = getattr(exc, "status_code", None) or type(exc).__name__
    logger.info(
        "OpenAI request failed (%s); attempt %d, retrying in %.2fs", status, state.attempt_number, state.upcoming_sleep
    )


def _collect(response: Any, expected: int, dimensions: int) -> npt.NDArray[np.float32]:
    """The answer's vectors in request order, checked before anyone sees them."""
    data = response.data
    if not isinstance(data, list) or len(data) != expected:
        count = len(data) if isinstance(data, list) else "no list of"
        raise ProviderError(f"OpenAI returned {count} vectors for {expected} texts; nothing was kept.")
    vectors = np.empty((expected, dimensions), dtype=np.float32)
    seen = np.zeros(expected, dtype=bool)
    for item in data:
        index = getattr(item, "index", None)
        if not isinstance(index, int) or not 0 <= index < expected or seen[index]:
            raise ProviderError(f"OpenAI returned a vector with index {index} for {expected} texts; nothing was kept.")
        vector = _decode(item.embedding)
        if vector.shape != (dimensions,):
            raise ProviderError(f"OpenAI returned a vector of length {vector.size}, expected {dimensions}.")
        vectors[index] = vector
        seen[index] = True
    if not np.isfinite(vectors).all():
        raise ProviderError("OpenAI returned a vector with NaN or infinite values; nothing was kept.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ProviderError("OpenAI returned an all-zero vector; nothing was kept.")
    # The API's vectors are unit length already; compatible endpoints' may not be.
    vectors /= norms
    return vectors


def _decode(embedding: object) -> npt.NDArray[np.float32]:
    try:
        if isinstance(embedding, str):
            return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").astype(np.float32)
        vector: npt.NDArray[np.float32] = np.asarray(embedding, dtype=np.float32).reshape(-1)
        return vector
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ProviderError(f"OpenAI returned a vector that is not a list of floats or base64 float32: {exc}") from exc


def _reject_blank(texts: list[str], *, after: str | None = None) -> None:
    blank = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if not blank:
        return
    named = ", ".join(str(i) for i in blank[:_MAX_POSITIONS_NAMED])
    more = f" and {len(blank) - _MAX_POSITIONS_NAMED} more" if len(blank) > _MAX_POSITIONS_NAMED else ""
    when = f" after {after}" if after else ""
    raise InputError(
        f"empty or whitespace-only text{when} at position{'s' if len(blank) > 1 else ''} {named}{more}: "
        "remove those items or give them content; nothing was sent."
    )
