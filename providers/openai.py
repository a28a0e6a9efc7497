"""OpenAI's embedding models through the official `openai` SDK, on the remote-request engine.

```python
provider = OpenAIProvider("text-embedding-3-small", options=OpenAIOptions(tpm=1_000_000))
result = await provider.embed(["def f(): ...", "class A: ..."])
```

Packing, pacing, retries and partial results are the engine's (`remote.engine.RemoteProvider`). This
module holds what is OpenAI's: the model table, the SDK call, what its errors mean and their
translation into ours (in exactly one place, `_translate`), and the checks on every answer
(count, `index`, dimensions, finite values). The SDK never retries (`max_retries=0`): the
engine is the one owner of retries.

The API key is read at the first request (`OPENAI_API_KEY`, through `env.read_api_key`,
unless one was passed) and is never put in a message or a log.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import httpx2
import numpy as np
import numpy.typing as npt
import openai

from providers.base import InputType
from providers.env import read_api_key
from providers.errors import (
    AuthenticationError,
    ConfigurationError,
    EmbeddingError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from providers.redaction import add_secret
from providers.registry import ProviderSpec
from providers.remote.capped import OversizedResponse, capped_client
from providers.remote.engine import Failure, RemoteProvider, Reply
from providers.remote.http_json import is_refused
from providers.remote.options import RemoteOptions, remote_fields_from_env
from providers.remote.pacing import build_limiter
from providers.remote.ratelimit import Clock, RateLimiter, Sleep, parse_retry_after
from providers.settings import DEFAULT_OPENAI_MODEL, Settings
from providers.text.tokens import Tokenizer

__all__ = ["MODEL_DIMENSIONS", "OPENAI_PRICES", "OpenAIOptions", "OpenAIProvider", "openai_options"]

OPENAI_PRICES: Mapping[str, float] = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
"""USD per 1M input tokens of OpenAI's embedding models."""

MODEL_DIMENSIONS: Mapping[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Each known model's native vector length."""
_SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
_OPENAI_URL = "https://api.openai.com/v1"


@dataclass(frozen=True, kw_only=True)
class OpenAIOptions(RemoteOptions):
    """How the OpenAI provider packs, paces and retries. Every field has a working default."""

    dimensions: int | None = None
    """Shorter vectors from the v3 models (None: the model's native length)."""
    encoding_format: Literal["base64", "float"] = "base64"
    """Wire format of the vectors; base64 is 4x smaller. Use "float" for endpoints without base64."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OpenAIOptions:
        """The `SIGNAL_HUB_OPENAI_*` variables, checked (a bad one raises `ConfigurationError` naming it)."""
        return cls(**remote_fields_from_env(env, "SIGNAL_HUB_OPENAI", cls()))


def openai_options(settings: Settings) -> OpenAIOptions:
    """The OpenAI options `Settings.from_env` read (`SIGNAL_HUB_OPENAI_*`), else the defaults."""
    found: Any = settings.provider_options.get("openai")
    return found if isinstance(found, OpenAIOptions) else OpenAIOptions()


class OpenAIProvider(RemoteProvider):
    """Embeds with OpenAI's embedding models over HTTP, paced, retried and in input order."""

    name = "openai"
    label = "OpenAI"

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
        limiter: RateLimiter | None = None,
        pacing_dir: Path | None = None,
    ) -> None:
        if model not in MODEL_DIMENSIONS:
            raise ConfigurationError(f"unknown OpenAI model {model!r}; choose one of: {', '.join(MODEL_DIMENSIONS)}.")
        options = options or OpenAIOptions()
        wanted, native = options.dimensions, MODEL_DIMENSIONS[model]
        if wanted is not None and model not in _SHORTENABLE and wanted != native:
            raise ConfigurationError(f"{model} makes {native}-dimension vectors only; use a text-embedding-3 model.")
        if wanted is not None and not 1 <= wanted <= native:
            raise ConfigurationError(f"dimensions must be between 1 and {native} for {model}.")
        # With a data directory, every process using this endpoint and key paces with the others.
        limiter = limiter or build_limiter(
            options.rpm,
            options.tpm,
            window=options.rate_window,
            clock=clock,
            sleep=sleep,
            shared_in=pacing_dir,
            endpoint=base_url or _OPENAI_URL,
            key=lambda: self._api_key,
        )
        super().__init__(model, options=options, tokenizer=tokenizer, clock=clock, sleep=sleep, limiter=limiter)
        self.options: OpenAIOptions = options
        # Sent only to the models that take it (ada-002 refuses the parameter even at 1536).
        self._dimensions_param = wanted if model in _SHORTENABLE else None
        self._api_key = api_key
        self._base_url = base_url
        self._http_client = http_client
        self._sdk: openai.AsyncOpenAI | None = None

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

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def _prepare(self) -> None:
        self._client()

    def _client(self) -> openai.AsyncOpenAI:
        if self._sdk is None:
            # One reading of a key, passed or from the environment: placeholders unset, bad forms refused.
            given = {"OPENAI_API_KEY": self._api_key} if self._api_key else os.environ
            key = read_api_key(given, "OPENAI_API_KEY")
            if not key:
                # Like a rejected key, and answered the same way: by the fallback provider, if any.
                raise AuthenticationError(
                    "no OpenAI API key: set OPENAI_API_KEY (or SIGNAL_HUB_PROVIDER=local to embed without one)."
                )
            self._api_key = key
            add_secret(key)
            self._sdk = openai.AsyncOpenAI(
                api_key=key,
                base_url=self._base_url,
                max_retries=0,  # the engine is the one owner of retries
                timeout=self.options.request_timeout,
                http_client=self._http_client or capped_client(),  # answers bounded in memory, decompressed
            )
        return self._sdk

    async def _request(self, texts: list[str], input_type: InputType) -> Reply:
        extra: dict[str, Any] = {"dimensions": self._dimensions_param} if self._dimensions_param else {}
        raw = await self._client().embeddings.with_raw_response.create(
            input=texts, model=self.model, encoding_format=self.options.encoding_format, **extra
        )
        response = raw.parse()
        vectors = collect_vectors(response.data, len(texts), self.dimensions, label=self.label)
        return Reply(vectors, reported_tokens(response), raw.headers)

    def _classify(self, exc: BaseException) -> Failure | None:
        return classify(exc)

    def _translate(self, exc: BaseException, *, attempts: int) -> EmbeddingError:
        """The one place SDK exceptions become ours (`EmbeddingError` redacts and cuts the message)."""
        detail = api_message(exc)
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
            where = endpoint_of(self._base_url or _OPENAI_URL)
            return ProviderUnavailableError(
                f"OpenAI {outage(exc)} {tried} at {where}: {detail} Check the network and OPENAI_BASE_URL, "
                "or retry later."
            )
        return ProviderError(f"the OpenAI SDK failed: {detail}")


# What the SDK's exceptions and answers mean: shared by every provider that speaks /v1/embeddings.


def classify(exc: BaseException) -> Failure | None:
    """What a failed attempt through the `openai` SDK means to the engine."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        status = exc.status_code
        rate_limited = status == 429 and not _is_quota(exc)
        return Failure(
            retry=rate_limited or status in (408, 503) or status >= 500,
            answered=True,  # the server refused the request, so it counted none of its tokens
            too_large=_is_too_large(exc),
            retry_after=parse_retry_after(headers),
            rate_limited=rate_limited,
            headers=headers,
        )
    if isinstance(exc, openai.APIConnectionError | TimeoutError):  # APITimeoutError included
        # An answer over its cap would be as large again: not worth a retry.
        return Failure(retry=_oversized(exc) is None, refused=is_refused(exc))
    return None


def reported_tokens(response: Any) -> int | None:
    """`usage.prompt_tokens` when the server reported it (some compatible servers do not)."""
    tokens = getattr(getattr(response, "usage", None), "prompt_tokens", None)
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def endpoint_of(base_url: str) -> str:
    """host[:port] of a base URL, as messages and vector spaces name it."""
    parts = urlsplit(base_url if "//" in base_url else f"//{base_url}")
    host = parts.hostname or base_url
    return f"{host}:{parts.port}" if parts.port else host


def outage(exc: BaseException) -> str:
    """How an unreachable or failing endpoint is described."""
    if isinstance(exc, openai.APIStatusError):
        return f"answered {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "did not answer in time"
    if is_refused(exc):
        return "could not be reached (connection refused: nothing listens there)"
    return "could not be reached"


def api_message(exc: BaseException) -> str:
    """What the server said, as it said it (the error made of it redacts and cuts it)."""
    if (oversized := _oversized(exc)) is not None:
        return f"{oversized}."
    if isinstance(exc, openai.APIError):
        body = exc.body
        if isinstance(body, Mapping) and isinstance(body.get("message"), str):
            return str(body["message"])
        if isinstance(body, str) and body.strip():  # servers like TEI answer {"error": "..."} or plain text
            return body.strip()
        return exc.message
    return str(exc) or type(exc).__name__


def collect_vectors(data: object, expected: int, dimensions: int | None, *, label: str) -> npt.NDArray[np.float32]:
    """The answer's vectors in request order, checked before anyone sees them (`dimensions` None: any, alike)."""
    if not isinstance(data, list) or len(data) != expected:
        count = len(data) if isinstance(data, list) else "no list of"
        raise ProviderError(f"{label} returned {count} vectors for {expected} texts; nothing was kept.")
    decoded: list[npt.NDArray[np.float32] | None] = [None] * expected
    for item in data:
        index = getattr(item, "index", None)
        if not isinstance(index, int) or not 0 <= index < expected or decoded[index] is not None:
            raise ProviderError(f"{label} returned a vector with index {index} for {expected} texts; nothing was kept.")
        vector = _decode(getattr(item, "embedding", None), label)
        if dimensions is None:
            dimensions = vector.size
        if vector.shape != (dimensions,):
            raise ProviderError(f"{label} returned a vector of length {vector.size}, expected {dimensions}.")
        decoded[index] = vector
    vectors = np.stack([v for v in decoded if v is not None]).astype(np.float32, copy=False)
    if not np.isfinite(vectors).all():
        raise ProviderError(f"{label} returned a vector with NaN or infinite values; nothing was kept.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ProviderError(f"{label} returned an all-zero vector; nothing was kept.")
    # The API's vectors are unit length already; compatible endpoints' may not be.
    vectors /= norms
    return vectors


def _decode(embedding: object, label: str) -> npt.NDArray[np.float32]:
    try:
        if isinstance(embedding, str):
            return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").astype(np.float32)
        vector: npt.NDArray[np.float32] = np.asarray(embedding, dtype=np.float32).reshape(-1)
        return vector
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ProviderError(f"{label} returned a vector that is not a list of floats or base64 float32: {exc}") from exc


def _is_quota(exc: openai.APIStatusError) -> bool:
    return exc.code == "insufficient_quota" or exc.type == "insufficient_quota"


def _is_too_large(exc: openai.APIStatusError) -> bool:
    """The endpoint refused the request for its total size (not for one over-long text)."""
    if exc.status_code == 413:
        return True
    message = api_message(exc).lower()
    return exc.status_code in (400, 422) and (
        exc.code == "max_tokens_per_request"
        or "tokens per request" in message
        or "batch too large" in message
        or "batch size" in message
    )


def _oversized(exc: BaseException) -> OversizedResponse | None:
    """The capped answer under an SDK connection error, if that is what it was."""
    cause = exc.__cause__
    return cause if isinstance(cause, OversizedResponse) else None


def _build(settings: Settings, model: str | None, dimensions: int | None) -> OpenAIProvider:
    options = dataclasses.replace(openai_options(settings), dimensions=dimensions)
    return OpenAIProvider.from_settings(settings, model, options=options)


# Besides SIGNAL_HUB_OPENAI_* (read by `OpenAIOptions.from_env`), the SDK's own OPENAI_API_KEY and
# OPENAI_BASE_URL, which `Settings.from_env` reads.
PROVIDER = ProviderSpec(
    name="openai",
    factory=_build,
    summary="OpenAI's text-embedding-3-small/-large and ada-002 over the API; paid per token",
    order=10,
    price=lambda settings, model: OPENAI_PRICES.get(model),
    read_options=OpenAIOptions.from_env,
    variables=("OPENAI_API_KEY", "SIGNAL_HUB_OPENAI_MODEL"),
)
