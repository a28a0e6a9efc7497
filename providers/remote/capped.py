"""A bound on what one HTTP answer may take in memory, decompressed: no gzip bomb gets through.

```python
client = capped_client()                       # an httpx2 client (the SDK's defaults) that checks every answer
with response_cap(answer_bytes(32, 1536)):     # the largest plausible answer to this request
    reply = await client.post(...)             # more than that, decompressed: OversizedResponse
```

The check is a response event hook, so it holds whatever transport or proxy the client uses: the
body is decompressed in bounded pieces (httpx2 inflates at most 1 MiB per step) and counted, and
reading stops at the cap. Without a `response_cap` in force, `DEFAULT_CAP` applies.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

__all__ = ["DEFAULT_CAP", "OversizedResponse", "answer_bytes", "cap_response", "capped_client", "response_cap"]

DEFAULT_CAP = 32 * 2**20
"""Bytes of any answer no caller bounded more closely (status reads, listings)."""
_SLACK = 2**20
"""Beyond the vectors: the JSON around them, usage, an error page."""
_FLOAT_BYTES = 26
"""The longest a float32 takes in JSON (`-1.23456789e-05, `): floats, even where base64 was asked for."""
_MAX_DIMENSIONS = 16_384
"""Vector length assumed while a server's is unknown."""

_CAP: contextvars.ContextVar[int | None] = contextvars.ContextVar("response_cap", default=None)


class OversizedResponse(httpx2.DecodingError):
    """An answer decompressed to more than its cap: reading stopped, nothing of it is used."""


def answer_bytes(texts: int, dimensions: int | None) -> int:
    """The largest plausible answer carrying `texts` vectors of `dimensions` (None or 0: unknown) floats."""
    per_vector = (dimensions or _MAX_DIMENSIONS) * _FLOAT_BYTES + 128
    return texts * per_vector + _SLACK


@contextlib.contextmanager
def response_cap(limit: int) -> Iterator[None]:
    """Bound the answers to requests sent from this task (and tasks it starts) within the block."""
    token = _CAP.set(limit)
    try:
        yield
    finally:
        _CAP.reset(token)


async def cap_response(response: httpx2.Response) -> None:
    """An httpx2 response hook: from here on, `response` decompresses within the cap or raises `OversizedResponse`."""
    limit = _CAP.get() or DEFAULT_CAP
    # A response of its own decodes the body as the headers say; ours then serves decoded bytes.
    encoded = httpx2.Response(response.status_code, headers=response.headers.copy(), stream=response.stream)
    response.stream = _Capped(encoded, limit, str(response.request.url.copy_with(query=None)))
    for name in ("content-encoding", "content-length"):
        if name in response.headers:
            del response.headers[name]


def capped_client(**kwargs: Any) -> httpx2.AsyncClient:
    """An async client with the `openai` SDK's defaults whose every answer is capped (`cap_response`)."""
    import openai

    hooks = kwargs.pop("event_hooks", {})
    hooks = {**hooks, "response": [*hooks.get("response", ()), cap_response]}
    return openai.DefaultAsyncHttpxClient(event_hooks=hooks, **kwargs)


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, encoded: httpx2.Response, limit: int, url: str) -> None:
        self._encoded = encoded
        self._limit = limit
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for piece in self._encoded.aiter_bytes():
            total += len(piece)
            if total > self._limit:
                await self._encoded.aclose()
                raise OversizedResponse(
                    f"the answer from {self._url} decompresses to more than {self._limit:,} bytes, more than "
                    "any answer to this request can hold; reading stopped and nothing of it was used"
                )
            yield piece

    async def aclose(self) -> None:
        await self._encoded.aclose()
