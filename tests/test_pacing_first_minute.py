"""The first minute against a server whose limits are learnt from its headers (nothing configured).

Issue 25: before the limits were known, a call packed all its requests at 32,768 tokens each,
more than a small TPM allows in one request, so the first minute met 429s (or gave up).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.batching import OPENAI_LIMITS, RequestLimits, request_cap
from tests.loopback_openai import LoopbackOpenAI, count_tokens

pytestmark = pytest.mark.anyio
KEY = "sk-first-minute"
SCALE = 30.0  # a virtual minute lasts 2 s
WAIT = 60


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY, rpm=500, tpm=20_000, time_scale=SCALE) as running:
        yield running


def chunks(tokens: int) -> list[str]:
    found, total = [], 0
    while total < tokens:
        text = f"def handler_{len(found)}(event):\n    return event.payload['value'] * {len(found)} + offset\n" * 4
        found.append(text)
        total += count_tokens(text)
    return found


@pytest.mark.parametrize("shared", [False, True])
async def test_a_first_call_larger_than_the_tpm_meets_no_429_and_embeds_everything(
    server: LoopbackOpenAI, tmp_path: Path, shared: bool
) -> None:
    provider = OpenAIProvider(
        api_key=KEY,
        base_url=server.base_url,
        options=OpenAIOptions(rate_window=60 / SCALE),
        pacing_dir=tmp_path if shared else None,
    )
    items = chunks(30_000)  # one and a half minutes of the TPM
    try:
        with anyio.fail_after(WAIT):
            result = await provider.embed(items)
    finally:
        await provider.aclose()
    assert result.count == len(items)
    assert server.rate_limited_count == 0, server.status_counts
    first = server.requests[0]
    assert sum(count_tokens(str(text)) for text in first.inputs) <= 2_000  # a small probe goes first
    # Once the limit is known, no request holds more than a small share of it.
    assert max(sum(count_tokens(str(t)) for t in r.inputs) for r in server.requests) <= 20_000 / 10


def test_requests_stay_a_small_share_of_the_tpm_and_mid_sized_under_any_limit() -> None:
    assert request_cap(OPENAI_LIMITS, None, 30_000, 1.0) == 937  # 1/32 of the TPM, not a full 8,192-token input
    assert request_cap(OPENAI_LIMITS, None, 1e12, 1.0) == 32_768  # "unlimited" reported as a huge number
    assert request_cap(OPENAI_LIMITS, None, None, 1.0) == 32_768
    assert request_cap(OPENAI_LIMITS, None, 30_000, 1.25) == 749  # room for an API that counts more
    assert request_cap(OPENAI_LIMITS, None, 1_000, 1.0) == 256  # at least this many
    assert request_cap(RequestLimits(max_input_tokens=50, max_request_tokens=100), None, 1_000, 1.0) == 50
    assert request_cap(OPENAI_LIMITS, 20_000, 30_000, 1.0) == 20_000  # configured: as configured
