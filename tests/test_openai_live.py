"""Opt-in checks against the real OpenAI API: they run only with OPENAI_API_KEY set and the API reachable.

    OPENAI_API_KEY=sk-... .venv/bin/python -m pytest tests/test_openai_live.py -m live

They cost a fraction of a cent (about 10,000 tokens of text-embedding-3-small).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import numpy as np
import pytest

from providers.openai import OpenAIOptions, OpenAIProvider

WAIT = 120


def _skip_reason() -> str | None:
    if not os.environ.get("OPENAI_API_KEY"):
        return "OPENAI_API_KEY is not set: the live OpenAI tests are opt-in"
    url = urlsplit(os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
    host, port = url.hostname or "api.openai.com", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc}): the network does not allow the live OpenAI tests"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.live, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    live = OpenAIProvider(
        "text-embedding-3-small",
        api_key=os.environ["OPENAI_API_KEY"],
        base_url=os.environ.get("OPENAI_BASE_URL"),
        options=OpenAIOptions(dimensions=256),
    )
    yield live
    await live.aclose()


@pytest.mark.anyio
async def test_the_real_api_embeds_in_order_and_reports_usage(provider: OpenAIProvider) -> None:
    texts = ["def add(a, b): return a + b", "def sum_two(x, y): return x + y", "The weather is sunny."]
    with anyio.fail_after(WAIT):
        result = await provider.embed(texts)
    assert result.vectors.shape == (3, 256) and result.requests == 1 and result.tokens > 0
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-3)
    similar, unrelated = result.vectors[0] @ result.vectors[1], result.vectors[0] @ result.vectors[2]
    assert similar > unrelated


@pytest.mark.anyio
async def test_the_real_api_accepts_a_text_truncated_to_its_limit(provider: OpenAIProvider) -> None:
    long_text = "token " * 9000  # over 8192 tokens whichever tokenizer counts them
    with anyio.fail_after(WAIT):
        result = await provider.embed([long_text])
    assert result.truncated[0] > 0 and result.tokens <= 8192
