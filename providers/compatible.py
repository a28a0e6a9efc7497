"""`compatible`: any server that speaks OpenAI's `/v1/embeddings` (TEI, vLLM, infinity, Ollama, gateways).

    SIGNAL_HUB_PROVIDER=compatible
    SIGNAL_HUB_COMPATIBLE_BASE_URL=http://localhost:11434/v1
    SIGNAL_HUB_COMPATIBLE_MODEL=nomic-embed-text

The space names the endpoint, `compatible:<host[:port][/path]>/<model>:<dims>:l2`, so two servers'
vectors never mix. The length is `SIGNAL_HUB_COMPATIBLE_DIMENSIONS` (checked, never sent: TEI
refuses it), else learnt by a one-word probe and kept in the data directory (`compatible_probe`),
checked by the first real answer. A 413 or "batch too large" splits the request; a 404 tries the
URL with `/v1` added or taken away, once; a hung server costs one first-byte timeout and opens the
circuit. Usage missing (or implausible, on a free server) is our count, marked `tokens_estimated`;
texts over the server's stated input limit are `truncated`. Price 0 unless `..._COMPATIBLE_PRICE`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio

from providers.env import NON_NEGATIVE_USD, POSITIVE_INT, choice, number, optional, positive, read_api_key
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
from providers.remote.compatible_probe import (
    AnswerChecks,
    FactStore,
    endpoint_label,
    other_route,
    over_limit,
    stated_limit,
    truncation_unknown,
)
from providers.remote.engine import Failure, RemoteProvider, Reply
from providers.remote.options import RemoteOptions, remote_fields_from_env
from providers.remote.pacing import build_limiter
from providers.remote.ratelimit import Clock, RateLimiter, Sleep
from providers.text.tokens import Tokenizer

if TYPE_CHECKING:
    import openai

    from providers.base import EmbeddingProvider, EmbeddingResult, InputType
    from providers.settings import Settings

__all__ = ["TEI_LIMITS", "CompatibleOptions", "CompatibleProvider", "ServerHungError"]

logger = logging.getLogger(__name__)

_PREFIX = "SIGNAL_HUB_COMPATIBLE"
TEI_LIMITS = RequestLimits(
    max_inputs=32, max_input_tokens=8192, max_request_tokens=32 * 8192, max_request_bytes=2_000_000
)
"""Safe for text-embeddings-inference's defaults (max_client_batch_size 32, payload_limit 2 MB)."""
# Our token estimate of the request being sent, for the check of the usage its answer reports.
_ESTIMATED: ContextVar[int | None] = ContextVar("compatible_estimated", default=None)
# Seconds the server may take to tell its input limit (asked once per process).
_LIMIT_TIMEOUT = 2.0


class ServerHungError(ProviderUnavailableError):
    """The server took a request and did not answer in time: the circuit opens at once."""

    open_circuit_s = 0.0  # for the usual cool-down (see `fallback.CircuitBreaker`)


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
    first_byte_timeout: float = 8.0
    """Seconds to wait for the answer to start; a hung server costs this once, then the circuit opens."""
    timeout_attempts: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.first_byte_timeout <= 0:
            raise ConfigurationError(f"{_PREFIX}_FIRST_BYTE_S must be a positive number of seconds.")
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
            first_byte_timeout=number(env, f"{_PREFIX}_FIRST_BYTE_S", float, positive("seconds"), 8.0),
            **remote_fields_from_env(env, _PREFIX, default),
        )


class CompatibleProvider(RemoteProvider):
    """Embeds with any `/v1/embeddings` server through the `openai` SDK, on the remote-request engine.

    `state_dir` (the data directory) keeps what was learnt of the server between starts.
    """

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
        state_dir: Path | None = None,
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
        self.endpoint = endpoint_label(options.base_url)
        self.label = f"the server at {self.endpoint}"
        self._facts = FactStore(state_dir, options.base_url, options.model)
        known = self._facts.load()
        self.base_url = known.base_url or options.base_url
        self._route_known = known.base_url is not None
        self._tried_route: str | None = None
        # A length kept from an earlier start names the space at once (cached vectors answer even
        # with the server down); the first real answer confirms it.
        self._learnt_dimensions = options.dimensions or known.dimensions
        self._confirmed = options.dimensions is not None
        self._input_limit = known.input_limit
        self._limit_asked = known.input_limit is not None
        self._checks = AnswerChecks(self.label, options.model, _PREFIX)
        self._sdk: openai.AsyncOpenAI | None = None

    def __repr__(self) -> str:
        return f"CompatibleProvider(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def dimensions(self) -> int:
        """The configured or learnt length; 0 until the first answer when neither is known."""
        return self._learnt_dimensions or 0

    async def resolve_space(self) -> None:
        """Learn the vector length before the cache is read, so cached vectors are found from the first call.

        One request of one word, at most once per data directory; set `SIGNAL_HUB_COMPATIBLE_DIMENSIONS` to skip it.
        """
        if self._learnt_dimensions is None:
            await self.embed(["dimensions"])

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def _prepare(self) -> None:
        if self._sdk is None:
            self._sdk = self._client(self.base_url)
        if not self._limit_asked:
            self._limit_asked = True
            found = await stated_limit(self._sdk, self.base_url, self.model, timeout=_LIMIT_TIMEOUT)
            if found is not None:  # else results with long texts say truncation is unknown
                self._input_limit = found
                self._facts.update(input_limit=found)

    def _client(self, base_url: str) -> openai.AsyncOpenAI:
        import openai

        add_secret(self.options.api_key)
        return openai.AsyncOpenAI(
            api_key=self.options.api_key or "none",  # most self-hosted servers take no key
            base_url=base_url,
            max_retries=0,  # the engine is the one owner of retries
            # A hung server is found out by its first byte, not by the whole request's timeout.
            timeout=openai.Timeout(self.options.request_timeout, read=self.options.first_byte_timeout),
            http_client=capped_client(),  # answers bounded in memory, decompressed
        )

    async def embed_each(self, texts: Sequence[str], **options: Any) -> EmbeddingResult:
        result = await super().embed_each(texts, **options)
        if self._input_limit is None and (caveat := truncation_unknown(self.label, texts)):
            result = replace(result, warning=caveat)
        return result

    async def _attempt(
        self, texts: list[str], estimated: int, input_type: InputType, *, within: float | None = None
    ) -> Reply:
        token = _ESTIMATED.set(estimated)  # read by `_request`, in this task only
        try:
            return await super()._attempt(texts, estimated, input_type, within=within)
        finally:
            _ESTIMATED.reset(token)

    async def _request(self, texts: list[str], input_type: InputType) -> Reply:
        import openai

        from providers.openai import collect_vectors, reported_tokens

        assert self._sdk is not None  # `_prepare` ran
        try:
            raw = await self._create(self._sdk, texts)
        except openai.NotFoundError:
            if self._route_known:
                raise
            raw = await self._other_route(texts)
        self._route_known = True
        try:
            response = raw.parse()
            data = response.data
        except (ValueError, AttributeError) as exc:  # an HTML page, or JSON that is not an embeddings answer
            kind = raw.headers.get("content-type", "no content type")
            raise ProviderUnavailableError(
                f"{self.label} answered {raw.status_code} with {kind} that is not an embeddings answer (a proxy "
                f"or login page?): check {_PREFIX}_BASE_URL ({self.base_url})."
            ) from exc
        expected = self._learnt_dimensions if self._confirmed else None
        vectors = collect_vectors(data, len(texts), expected, label=self.label)
        self._check_length(vectors.shape[1])
        self._checks.model(getattr(response, "model", None))
        usage = reported_tokens(response)  # a priced server bills it: the engine's bound records it, stops
        return Reply(vectors, usage if self.options.price else self._checks.usage(usage, _ESTIMATED.get()), raw.headers)

    async def _create(self, sdk: openai.AsyncOpenAI, texts: list[str]) -> Any:
        return await sdk.embeddings.with_raw_response.create(
            input=texts, model=self.model, encoding_format=self.options.encoding_format
        )

    async def _other_route(self, texts: list[str]) -> Any:
        """The configured URL has no /embeddings: try it with `/v1` added or taken away, once."""
        other = other_route(self.base_url)
        self._route_known, self._tried_route = True, other
        sdk = self._client(other)
        try:
            raw = await self._create(sdk, texts)
        except BaseException:
            await sdk.close()
            raise
        assert self._sdk is not None
        await self._sdk.close()
        self._checks.warn_once(
            "route",
            f"{self.label} answers at {other}, not {self.base_url}: using it. Set {_PREFIX}_BASE_URL={other}.",
        )
        self._sdk, self.base_url = sdk, other
        self._facts.update(base_url=other)
        return raw

    def _check_length(self, length: int) -> None:
        known = self._learnt_dimensions
        if known is None:
            self._learnt_dimensions, self._confirmed = length, True
            self._facts.update(dimensions=length)
        elif not self._confirmed:  # kept from an earlier start: this is the first real answer
            self._confirmed = True
            if length != known:
                self._learnt_dimensions = length
                self._facts.update(dimensions=length)
                raise ProviderError(
                    f"{self.label} now makes {length}-dimension vectors; at an earlier start it made {known}: the "
                    "model behind it changed. Nothing was kept from this call, so the two never mix; retry it."
                )
        elif length != known:
            raise ProviderError(
                f"{self.label} returned {length}-dimension vectors, earlier {known}: "
                f"did the model behind it change? Set {_PREFIX}_DIMENSIONS to the length you expect."
            )

    def _cut_overlong(self, texts: list[str], tokenizer: Tokenizer) -> dict[int, int]:
        # Texts over the input limit the server states are cut by the server: report them too.
        truncated = super()._cut_overlong(texts, tokenizer)
        return over_limit(texts, tokenizer, self._input_limit, truncated)

    def _classify(self, exc: BaseException) -> Failure | None:
        import openai

        from providers.openai import classify

        found = classify(exc)
        if found is not None and isinstance(exc, openai.APITimeoutError | TimeoutError):
            return replace(found, timed_out=True)
        return found

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
            urls = f"{self.options.base_url} nor at {self._tried_route}" if self._tried_route else self.base_url
            return ConfigurationError(
                f"{self.label} has no model {self.model!r} or no /embeddings route at {urls}: {detail} "
                f"Check {_PREFIX}_MODEL and {_PREFIX}_BASE_URL."
            )
        if isinstance(exc, openai.APIStatusError) and exc.status_code == 413:
            return InputError(f"{where} refused one text as too large: {detail} Split it, or raise the server's limit.")
        if isinstance(exc, openai.APIStatusError) and exc.status_code < 500 and exc.status_code not in (408, 429):
            return InputError(f"{where} refused the request ({exc.status_code}): {detail}")
        if isinstance(exc, openai.APITimeoutError | TimeoutError):
            return ServerHungError(
                f"{self.label} {outage(exc)} (no answer within {self.options.first_byte_timeout:g} s) {tried}: "
                f"{detail} Is the server overloaded or stuck? Raise {_PREFIX}_FIRST_BYTE_S if it is only slow."
            )
        if isinstance(exc, openai.APIStatusError | openai.APIConnectionError):
            return ProviderUnavailableError(f"{self.label} {outage(exc)} {tried}: {detail} Is the server running?")
        return ProviderError(f"the request to {where} failed: {detail}")


def _options(settings: Settings) -> CompatibleOptions:
    found: Any = settings.provider_options.get("compatible")
    return found if isinstance(found, CompatibleOptions) else CompatibleOptions()


def _build(settings: Settings, model: str | None, dimensions: int | None) -> EmbeddingProvider:
    options = _options(settings)
    if model is not None:
        options = replace(options, model=model)
    if dimensions is not None:
        options = replace(options, dimensions=dimensions)
    return CompatibleProvider(
        options,
        pacing_dir=settings.resolved_data_dir if settings.shared_pacing else None,
        state_dir=settings.resolved_data_dir,
    )


PROVIDER = ProviderSpec(
    name="compatible",
    factory=_build,
    summary="any OpenAI-compatible `/v1/embeddings` server (TEI, vLLM, infinity, Ollama); price 0 unless set",
    order=20,
    price=lambda settings, model: _options(settings).price,
    read_options=CompatibleOptions.from_env,
    variables=(f"{_PREFIX}_BASE_URL", f"{_PREFIX}_MODEL", f"{_PREFIX}_API_KEY"),
)
