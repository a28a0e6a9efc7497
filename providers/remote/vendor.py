"""The one provider class the four JSON embedding APIs share (Voyage, Gemini, Cohere, Mistral).

A vendor module (`providers/voyage.py`, ...) declares a `Vendor` (`vendor_spec`: key variable,
base URL, models with their vector lengths, prices and request limits) and subclasses
`VendorProvider` with small methods: the request (`_payload`), the reading of the answer
(`_read`) and, where the vendor says it its own way, what an error means (`_too_large`,
`_retry_after`, `_is_quota`, `_is_auth`). Everything else is here once:

- the key, read from `<KEY_VARIABLE>` at the first request through `env.read_api_key`
  (a malformed one is refused when the provider is built), never put in a message;
- `SIGNAL_HUB_<NAME>_BASE_URL`, `_MODEL`, `_DIMENSIONS` and the engine's `_RPM`, `_TPM`,
  `_MAX_INPUTS`, ... variables (`vendor_spec.read_vendor_options`);
- the input-type word: each module maps `document`/`query` to its API's in `_payload`;
- the request limits of the model in force, never above what the vendor documents;
- the checks on every answer (count, length, finite, non-zero) and the translation of failures
  into our errors, which the fallback and circuit breaker act on as for every provider.
"""

from __future__ import annotations

import dataclasses
import os
import time
from abc import abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import httpx2
import numpy as np
import numpy.typing as npt

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
from providers.remote.batching import RequestLimits
from providers.remote.engine import Failure, RemoteProvider, Reply
from providers.remote.http_json import HttpStatusError, JsonApi, classify_http, outage
from providers.remote.pacing import build_limiter
from providers.remote.ratelimit import Clock, RateLimiter, Sleep
from providers.remote.vendor_spec import Vendor, VendorOptions, vendor_options
from providers.text.tokens import Tokenizer

if TYPE_CHECKING:
    from providers.base import InputType
    from providers.registry import ProviderFactory
    from providers.settings import Settings

__all__ = ["VendorProvider", "indexed", "vendor_factory"]


class VendorProvider(RemoteProvider):
    """An embedding API spoken as JSON over HTTP, on the remote-request engine."""

    vendor: ClassVar[Vendor]
    input_types = True
    """Whether the API takes a query/document word (Mistral's does not)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        options: VendorOptions | None = None,
        api_key: str | None = None,
        tokenizer: Tokenizer | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        limiter: RateLimiter | None = None,
        pacing_dir: Path | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        vendor = self.vendor
        options = options or vendor_options(vendor)
        model = model or options.model or vendor.default_model
        known = vendor.models.get(model)
        if known is None:
            raise ConfigurationError(
                f"unknown {vendor.label} model {model!r} ({vendor.prefix}_MODEL); "
                f"choose one of: {', '.join(vendor.models)}."
            )
        wanted = options.dimensions
        if wanted is not None and wanted != known.dimensions and wanted not in known.lengths:
            other = f"{_lengths(known.lengths)} or {known.dimensions}" if known.lengths else str(known.dimensions)
            raise ConfigurationError(
                f"{vendor.label} model {model!r} makes {other}-dimension vectors, not {wanted} "
                f"({vendor.prefix}_DIMENSIONS)."
            )
        # The model's documented limits hold whatever was configured; variables may only lower them.
        options = replace(options, limits=_tighter(options.limits, known.limits))
        self.base_url = options.base_url or vendor.base_url
        self._api_key = api_key
        limiter = limiter or build_limiter(
            options.rpm,
            options.tpm,
            window=options.rate_window,
            clock=clock,
            sleep=sleep,
            shared_in=pacing_dir,
            endpoint=self.base_url,
            key=lambda: self._api_key,  # known at the first request
        )
        super().__init__(model, options=options, tokenizer=tokenizer, clock=clock, sleep=sleep, limiter=limiter)
        self.options: VendorOptions = options
        self.label = vendor.label
        self._known = known
        self._http_client = http_client
        self._api: JsonApi | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def dimensions(self) -> int:
        return self.options.dimensions or self._known.dimensions

    @property
    def _dimensions_param(self) -> int | None:
        """The length to ask for: only when one was configured, and never of a one-length model (its API refuses it)."""
        return self.options.dimensions if self._known.lengths else None

    def check(self) -> None:
        super().check()
        if self._api_key is None:
            read_api_key(os.environ, self.vendor.key_variable)  # a malformed key is refused now, by name

    # what a vendor module supplies

    @abstractmethod
    def _payload(self, texts: list[str], input_type: InputType) -> tuple[str, dict[str, Any]]:
        """The path under the base URL and the JSON body of one request, the input type in the API's word."""

    @abstractmethod
    def _read(self, body: Any, count: int) -> tuple[list[Any], int | None]:
        """The answer's vectors in request order (or `indexed` rows) and the tokens it reports (None: none)."""

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _too_large(self, error: HttpStatusError) -> bool:
        """The request as a whole was too large (not one text): sent again in halves."""
        return error.status == 413

    def _retry_after(self, error: HttpStatusError) -> float | None:
        """A wait the vendor asks for in its error body (the `retry-after` header is read anyway)."""
        return None

    def _is_quota(self, error: HttpStatusError) -> bool:
        """A refusal that waiting will not end (no credit, a monthly or daily quota spent)."""
        return error.status == 402

    def _is_auth(self, error: HttpStatusError) -> bool:
        return error.status in (401, 403)

    # the engine's hooks, written once

    async def _prepare(self) -> None:
        if self._api is not None:
            return
        key = self._api_key or read_api_key(os.environ, self.vendor.key_variable)
        if not key:
            # Like a rejected key, and answered the same way: by the fallback provider, if any.
            raise AuthenticationError(
                f"no {self.vendor.label} API key: set {self.vendor.key_variable} "
                "(or SIGNAL_HUB_PROVIDER=local to embed without one)."
            )
        self._api_key = key
        add_secret(key)  # never shown, whatever an answer echoes
        self._api = JsonApi(
            self.base_url,
            self._auth_headers(key),
            timeout=self.options.request_timeout,
            http_client=self._http_client,
        )

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    async def _request(self, texts: list[str], input_type: InputType = "document") -> Reply:
        from providers.openai import collect_vectors

        assert self._api is not None  # `_prepare` ran
        path, payload = self._payload(texts, input_type)
        answer = await self._api.post(path, payload)
        try:
            rows, tokens = self._read(answer.body, len(texts))
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            what = f"{self.label} answered without the expected vectors ({exc!r}); nothing was kept."
            raise ProviderError(what) from exc
        if rows and not isinstance(rows[0], SimpleNamespace):  # a plain list in request order
            rows = [SimpleNamespace(index=i, embedding=row) for i, row in enumerate(rows)]
        vectors: npt.NDArray[np.float32] = collect_vectors(rows, len(texts), self.dimensions, label=self.label)
        return Reply(vectors, _usage(tokens), self._rate_headers(answer.headers))

    def _rate_headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        renames = self.vendor.rate_headers
        if not renames:
            return headers
        return {**headers, **{renames[name]: value for name, value in headers.items() if name in renames}}

    def _classify(self, exc: BaseException) -> Failure | None:
        return classify_http(
            exc,
            too_large=self._too_large,
            retry_after=self._retry_after,
            quota=self._is_quota,
            headers=self._rate_headers,
        )

    def _translate(self, exc: BaseException, *, attempts: int) -> EmbeddingError:
        """The one place this vendor's failures become ours; messages never carry the key."""
        vendor, prefix = self.vendor, self.vendor.prefix
        where = f"{vendor.label} ({self.base_url})"
        tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        if not isinstance(exc, HttpStatusError):
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, httpx2.TransportError | TimeoutError):
                return ProviderUnavailableError(
                    f"{where} {outage(exc)} {tried}: {detail} Check the network and {prefix}_BASE_URL, or retry later."
                )
            if isinstance(exc, httpx2.RequestError):  # DecodingError, an answer over its cap
                return ProviderError(f"{where} sent an answer that could not be read: {detail} Nothing was kept.")
            return ProviderError(f"the request to {where} failed: {detail}")
        detail, status = exc.detail, exc.status  # redacted and cut by the error made of it
        if self._is_auth(exc):
            return AuthenticationError(
                f"{where} rejected the API key ({status}): {detail} Check {vendor.key_variable}."
            )
        if self._is_quota(exc):
            return QuotaExceededError(f"{where} refused for want of credit or quota ({status}): {detail}")
        if status == 429:
            return RateLimitError(
                f"{where} kept rate limiting the request {tried}: {detail} "
                f"Wait a minute, or set {prefix}_RPM / {prefix}_TPM to your account's limits."
            )
        if status == 404:
            return ConfigurationError(
                f"{where} has no model {self.model!r} there: {detail} Check {prefix}_MODEL and {prefix}_BASE_URL."
            )
        if self._too_large(exc):
            return InputError(f"{where} refused one text as too large: {detail} Split it.")
        if status < 500 and status != 408:
            return InputError(f"{where} refused the request ({status}): {detail}")
        return ProviderUnavailableError(f"{where} {outage(exc)} {tried}: {detail} Retry later.")


def vendor_factory(cls: type[VendorProvider]) -> ProviderFactory:
    """The registry's factory for a vendor provider: its options from the settings, a model and length."""

    def build(settings: Settings, model: str | None, dimensions: int | None) -> VendorProvider:
        options = vendor_options(cls.vendor, settings)
        if dimensions is not None:
            options = replace(options, dimensions=dimensions)
        return cls(model, options=options, pacing_dir=settings.resolved_data_dir if settings.shared_pacing else None)

    return build


def indexed(data: Any) -> list[Any]:
    """An OpenAI-shaped `data` list (`{"index", "embedding"}` items) as rows the vector check reads."""
    return [SimpleNamespace(index=item["index"], embedding=item["embedding"]) for item in data]


def _usage(tokens: int | None) -> int | None:
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def _tighter(configured: RequestLimits, documented: RequestLimits) -> RequestLimits:
    return dataclasses.replace(
        configured,
        max_inputs=min(configured.max_inputs, documented.max_inputs),
        max_input_tokens=min(configured.max_input_tokens, documented.max_input_tokens),
        max_request_tokens=min(configured.max_request_tokens, documented.max_request_tokens),
    )


def _lengths(lengths: Collection[int]) -> str:
    ordered = sorted(lengths)
    if len(ordered) > 8:
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(map(str, ordered))
