"""`compatible`: any server that speaks OpenAI's `/v1/embeddings` (TEI, vLLM, infinity, Ollama, gateways).

```bash
SIGNAL_HUB_PROVIDER=compatible
SIGNAL_HUB_COMPATIBLE_BASE_URL=http://localhost:11434/v1
SIGNAL_HUB_COMPATIBLE_MODEL=nomic-embed-text
```

Any model name goes. The vector length is `SIGNAL_HUB_COMPATIBLE_DIMENSIONS` when set (checked
on every answer, never sent: TEI refuses the parameter), else learnt from the first answer (a
one-word probe before the cache is first read) and checked on every later one. The space names the endpoint,
`compatible:<host[:port]>/<model>:<dims>:l2`, so two servers' vectors never mix or share cache
entries. Requests default to what TEI takes (32 texts, 2 MB); a 413 or "batch too large" answer
splits the request and lowers the learnt limit. A server that reports no `usage` gets our own
token count, marked `tokens_estimated`. The price defaults to 0 (self-hosted); set
`SIGNAL_HUB_COMPATIBLE_PRICE` for a paid gateway.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio

from providers.env import NON_NEGATIVE_USD, POSITIVE_INT, choice, number, optional, read_api_key
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
from providers.remote.batching import RequestLimits
from providers.remote.capped import capped_client
from providers.remote.engine import Failure, RemoteProvider, Reply
from providers.remote.options import RemoteOptions, remote_fields_from_env
from providers.remote.pacing import build_limiter
from providers.remote.ratelimit import Clock, RateLimiter, Sleep
from providers.text.tokens import Tokenizer

if TYPE_CHECKING:
    import openai

    from providers.base import EmbeddingProvider
    from providers.settings import Settings

__all__ = ["TEI_LIMITS", "CompatibleOptions", "CompatibleProvider"]

_PREFIX = "SIGNAL_HUB_COMPATIBLE"
TEI_LIMITS = RequestLimits(
    max_inputs=32, max_input_tokens=8192, max_request_tokens=32 * 8192, max_request_bytes=2_000_000
)
"""Safe for text-embeddings-inference's defaults (max_client_batch_size 32, payload_limit 2 MB)."""


@dataclass(frozen=True, kw_only=True)
class CompatibleOptions(RemoteOptions):
    """Where the server is and what it takes; every `SIGNAL_HUB_COMPATIBLE_*` variable is a field."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    dimensions: int | None = None
    """The vector length the server makes (None: learnt from the first answer)."""
    price: float = 0.0
    """USD per 1M tokens (0 for a self-hosted server)."""
    encoding_format: Literal["float", "base64"] = "float"
    """Not every server knows base64 (Ollama does not), so floats by default."""
    limits: RequestLimits = TEI_LIMITS
    concurrency: int = 4
    max_attempts: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    f"{_PREFIX}_BASE_URL must be an http(s) URL such as http://localhost:8080/v1, "
                    f"got {self.base_url!r}."
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CompatibleOptions:
        """The `SIGNAL_HUB_COMPATIBLE_*` variables, checked (a bad one raises naming it)."""
        default = cls()
        return cls(
            base_url=env.get(f"{_PREFIX}_BASE_URL", "").strip() or None,
            model=env.get(f"{_PREFIX}_MODEL", "").strip() or None,
            api_key=read_api_key(env, f"{_PREFIX}_API_KEY"),
            dimensions=optional(env, f"{_PREFIX}_DIMENSIONS", int, POSITIVE_INT),
            price=number(env, f"{_PREFIX}_PRICE", float, NON_NEGATIVE_USD, 0.0),
            encoding_format=choice(env, f"{_PREFIX}_ENCODING", ("float", "base64"), "float"),
            **remote_fields_from_env(env, _PREFIX, default),
        )


class CompatibleProvider(RemoteProvider):
    """Embeds with any `/v1/embeddings` server through the `openai` SDK, on the remote-request engine."""

    name = "compatible"

    def __init__(
        self,
        options: CompatibleOptions,
        *,
        tokenizer: Tokenizer | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        limiter: RateLimiter | None = None,
        pacing_dir: Path | None = None,
    ) -> None:
        if options.base_url is None or options.model is None:
            raise ConfigurationError(
                f"the compatible provider needs {_PREFIX}_BASE_URL (e.g. http://localhost:11434/v1) and "
                f"{_PREFIX}_MODEL (e.g. nomic-embed-text)."
            )
        # With a data directory, every process using this server (and key) paces with the others.
        limiter = limiter or build_limiter(
            options.rpm,
            options.tpm,
            window=options.rate_window,
            clock=clock,
            sleep=sleep,
            shared_in=pacing_dir,
            endpoint=options.base_url,
            key=options.api_key or "none",  # keyless servers are paced by endpoint alone
        )
        super().__init__(options.model, options=options, tokenizer=tokenizer, clock=clock, sleep=sleep, limiter=limiter)
        self.options: CompatibleOptions = options
        self.base_url = options.base_url
        self.endpoint = _endpoint(options.base_url)
        self.label = f"the server at {self.endpoint}"
        self._learnt_dimensions = options.dimensions
        self._sdk: openai.AsyncOpenAI | None = None

    def __repr__(self) -> str:
        return f"CompatibleProvider(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def dimensions(self) -> int:
        """The configured or learnt length; 0 until the first answer when neither is known."""
        return self._learnt_dimensions or 0

    async def resolve_space(self) -> None:
        """Learn the vector length before the cache is read, so cached vectors are found from the first call.

        One request of one word, at most once per process; set `SIGNAL_HUB_COMPATIBLE_DIMENSIONS` to skip it.
        """
        if self._learnt_dimensions is None:
            await self.embed(["dimensions"])

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def _prepare(self) -> None:
        if self._sdk is None:
            import openai

            add_secret(self.options.api_key)
            self._sdk = openai.AsyncOpenAI(
                api_key=self.options.api_key or "none",  # most self-hosted servers take no key
                base_url=self.base_url,
                max_retries=0,  # the engine is the one owner of retries
                timeout=self.options.request_timeout,
                http_client=capped_client(),  # answers bounded in memory, decompressed
            )

    async def _request(self, texts: list[str]) -> Reply:
        from providers.openai import collect_vectors, reported_tokens

        assert self._sdk is not None  # `_prepare` ran
        raw = await self._sdk.embeddings.with_raw_response.create(
            input=texts, model=self.model, encoding_format=self.options.encoding_format
        )
        response = raw.parse()
        vectors = collect_vectors(response.data, len(texts), self._learnt_dimensions, label=self.label)
        length = vectors.shape[1]
        if self._learnt_dimensions is None:
            self._learnt_dimensions = length
        elif length != self._learnt_dimensions:
            raise ProviderError(
                f"{self.label} returned {length}-dimension vectors, earlier {self._learnt_dimensions}: "
                f"did the model behind it change? Set {_PREFIX}_DIMENSIONS to the length you expect."
            )
        return Reply(vectors, reported_tokens(response), raw.headers)

    def _classify(self, exc: BaseException) -> Failure | None:
        from providers.openai import classify

        return classify(exc)

    def _lower_limit(self, texts: int) -> None:
        self._learnt_inputs = max(1, min(self.limits().max_inputs, texts) // 2)

    def _translate(self, exc: BaseException, *, attempts: int) -> EmbeddingError:
        import openai

        from providers.openai import api_message, outage

        detail = api_message(exc)  # redacted and cut by the error made of it
        where = f"{self.label} ({self.base_url})"
        tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return AuthenticationError(
                f"{where} rejected the key ({exc.status_code}): {detail} Check {_PREFIX}_API_KEY."
            )
        if isinstance(exc, openai.RateLimitError) and (exc.code == "insufficient_quota"):
            return QuotaExceededError(f"{where} says the account has no credit left: {detail}")
        if isinstance(exc, openai.RateLimitError):
            return RateLimitError(f"{where} kept rate limiting the request {tried}: {detail} Lower {_PREFIX}_RPM/TPM.")
        if isinstance(exc, openai.NotFoundError):
            return ConfigurationError(
                f"{where} has no model {self.model!r} or no /embeddings route: {detail} "
                f"Check {_PREFIX}_MODEL and {_PREFIX}_BASE_URL (it usually ends in /v1)."
            )
        if isinstance(exc, openai.APIStatusError) and exc.status_code == 413:
            return InputError(f"{where} refused one text as too large: {detail} Split it, or raise the server's limit.")
        if isinstance(exc, openai.APIStatusError) and exc.status_code < 500 and exc.status_code not in (408, 429):
            return InputError(f"{where} refused the request ({exc.status_code}): {detail}")
        if isinstance(exc, openai.APIStatusError | openai.APIConnectionError | TimeoutError):
            return ProviderUnavailableError(f"{self.label} {outage(exc)} {tried}: {detail} Is the server running?")
        return ProviderError(f"the request to {where} failed: {detail}")


def _endpoint(base_url: str) -> str:
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    return f"{host}:{parts.port}" if parts.port else host


def _options(settings: Settings) -> CompatibleOptions:
    found: Any = settings.provider_options.get("compatible")
    return found if isinstance(found, CompatibleOptions) else CompatibleOptions()


def _build(settings: Settings, model: str | None, dimensions: int | None) -> EmbeddingProvider:
    options = _options(settings)
    if model is not None:
        options = replace(options, model=model)
    if dimensions is not None:
        options = replace(options, dimensions=dimensions)
    return CompatibleProvider(options, pacing_dir=settings.resolved_data_dir if settings.shared_pacing else None)


PROVIDER = ProviderSpec(
    name="compatible",
    factory=_build,
    summary="any OpenAI-compatible `/v1/embeddings` server (TEI, vLLM, infinity, Ollama); price 0 unless set",
    order=20,
    price=lambda settings, model: _options(settings).price,
    read_options=CompatibleOptions.from_env,
    variables=(f"{_PREFIX}_BASE_URL", f"{_PREFIX}_MODEL", f"{_PREFIX}_API_KEY"),
)
