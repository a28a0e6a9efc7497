"""Embedding APIs spoken as JSON over HTTP (Voyage, Gemini, Cohere, Mistral): one client for all of them.

```python
api = JsonApi("https://api.voyageai.com/v1", {"Authorization": f"Bearer {key}"}, timeout=60)
answer = await api.post("embeddings", {"input": texts, "model": "voyage-code-3"})
answer.body, answer.headers            # parsed JSON, response headers
```

A status other than 2xx raises `HttpStatusError` (status, headers, the parsed body and the
vendor's own message from it); a transport failure raises the `httpx2` exception as it is.
`classify_http` says what either means to the remote engine, in one place for every vendor.
Answers are read by a `capped.capped_client`: the engine bounds each (decompressed) to what its
texts can hold, so a runaway answer is refused, not held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from providers.errors import ProviderError
from providers.remote.capped import capped_client
from providers.remote.ratelimit import parse_retry_after
from providers.remote.retry import Failure

__all__ = [
    "HttpStatusError",
    "JsonAnswer",
    "JsonApi",
    "api_detail",
    "classify_http",
    "is_refused",
    "outage",
]


@dataclass(frozen=True)
class JsonAnswer:
    """A 2xx answer: its parsed JSON body and its headers (lower-case names)."""

    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


class HttpStatusError(Exception):
    """The API answered with a status other than 2xx."""

    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        """The parsed JSON body, or the text when it is not JSON."""
        self.detail = api_detail(body) or f"HTTP {status}"
        super().__init__(f"HTTP {status}: {self.detail}")


class JsonApi:
    """POSTs JSON to one API's base URL with fixed headers (auth among them); the client is made on first use."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = timeout
        self._client = http_client
        self._owned = http_client is None

    async def post(self, path: str, payload: Mapping[str, Any]) -> JsonAnswer:
        if self._client is None:
            self._client = capped_client(timeout=self._timeout)
        response = await self._client.post(f"{self.base_url}/{path.lstrip('/')}", json=payload, headers=self._headers)
        raw = response.content
        headers = {name.lower(): value for name, value in response.headers.items()}
        body = _parse(raw)
        if not 200 <= response.status_code < 300:
            raise HttpStatusError(response.status_code, headers, body)
        if isinstance(body, str):
            raise ProviderError(f"the answer from {self.base_url} is not JSON: {body}")
        return JsonAnswer(body, headers)

    async def aclose(self) -> None:
        if self._client is not None and self._owned:
            await self._client.aclose()
        self._client = None


def _parse(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def api_detail(body: Any) -> str:
    """The vendor's own message in an error body (the error made of it redacts and cuts it).

    The shapes met: `{"error": {"message"}}` (Gemini), `{"message"}` (Cohere, Mistral),
    `{"detail": str | [{"msg"}]}` (Voyage, FastAPI), `{"error": str}`, or plain text.
    """
    found: Any = body
    if isinstance(body, Mapping):
        error = body.get("error")
        found = next(
            (
                value
                for value in (
                    error.get("message") if isinstance(error, Mapping) else error,
                    body.get("message"),
                    body.get("detail"),
                )
                if value
            ),
            "",
        )
        if isinstance(found, Mapping):  # Mistral nests FastAPI's {"detail": [...]} in "message"
            return api_detail(found)
        if isinstance(found, list):  # FastAPI's validation errors
            found = "; ".join(str(item.get("msg", item)) if isinstance(item, Mapping) else str(item) for item in found)
    return " ".join(str(found).split()) if found else ""


def classify_http(
    exc: BaseException,
    *,
    too_large: Callable[[HttpStatusError], bool] = lambda error: error.status == 413,
    retry_after: Callable[[HttpStatusError], float | None] = lambda error: None,
    quota: Callable[[HttpStatusError], bool] = lambda error: False,
    headers: Callable[[Mapping[str, str]], Mapping[str, str]] = lambda given: given,
) -> Failure | None:
    """What one failed attempt means to the engine; the callables read what each vendor says its own way.

    `retry_after` reads a wait from the body (Gemini's RetryInfo) before the `retry-after` header is read;
    `headers` renames a vendor's rate-limit headers to the ones the pacer reads.
    """
    if isinstance(exc, HttpStatusError):
        status = exc.status
        rate_limited = status == 429 and not quota(exc)
        asked = retry_after(exc)
        return Failure(
            retry=rate_limited or status in (408, 503) or status >= 500,
            answered=True,  # the server refused the request, so it counted none of its tokens
            too_large=too_large(exc),
            retry_after=asked if asked is not None else parse_retry_after(exc.headers),
            rate_limited=rate_limited,
            headers=headers(exc.headers),
        )
    if isinstance(exc, httpx2.TransportError | TimeoutError):
        timed_out = isinstance(exc, httpx2.TimeoutException | TimeoutError)  # an outage after `timeout_attempts`
        return Failure(retry=True, refused=is_refused(exc), timed_out=timed_out)
    if isinstance(exc, httpx2.RequestError):  # an answer that cannot be decoded (or is over a cap): final
        return Failure(retry=False)
    return None


def outage(exc: BaseException) -> str:
    """How an unreachable or failing endpoint is described."""
    if isinstance(exc, HttpStatusError):
        return f"answered {exc.status}"
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return "did not answer in time"
    if is_refused(exc):
        return "could not be reached (connection refused: nothing listens there)"
    return "could not be reached"


def is_refused(exc: BaseException) -> bool:
    """Nothing listens at the endpoint (as opposed to a slow or dropped connection)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or "connection refused" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False
