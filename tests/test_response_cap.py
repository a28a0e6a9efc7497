"""A gzip bomb is stopped at the largest plausible answer: OpenAI, compatible, and Batch API downloads.

Issue 24, medium 9: a 962 KB gzip response raised the server's peak memory from 0.10 GB to 2.08 GB.
Here a 300 KB gzip body inflates to 300 MB; peak memory (tracemalloc) must stay far below that.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Awaitable, Callable, Iterator

import anyio
import httpx2
import openai
import pytest

from providers.batch_api.remote import BatchRemote
from providers.compatible import CompatibleOptions, CompatibleProvider
from providers.errors import ProviderUnavailableError
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.capped import answer_bytes, capped_client, response_cap
from tests.loopback_hostile import Answer, LoopbackHostile, Request, gzip_bomb, json_body

pytestmark = pytest.mark.anyio

INFLATED = 300 * 2**20
PEAK_LIMIT = 40 * 2**20
"""Bytes of Python memory a capped read may take at its peak (the cap is about 1.1 MB here)."""
WAIT = 60


def bomb(_: Request) -> Answer:
    return Answer(200, gzip_bomb(INFLATED), {"Content-Encoding": "gzip"})


@pytest.fixture
def server() -> Iterator[LoopbackHostile]:
    gzip_bomb(INFLATED)  # made before memory is traced
    with LoopbackHostile(bomb) as running:
        yield running


async def peak_while(call: Callable[[], Awaitable[object]]) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        with anyio.fail_after(WAIT):
            await call()
    except Exception as exc:
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


async def test_an_openai_answer_that_inflates_past_its_cap_is_refused_in_bounded_memory(
    server: LoopbackHostile,
) -> None:
    provider = OpenAIProvider(api_key="sk-test-bomb-0000", base_url=server.base_url, options=OpenAIOptions())
    peak, raised = await peak_while(lambda: provider.embed(["def f(): pass"]))
    await provider.aclose()
    assert isinstance(raised, ProviderUnavailableError), raised
    assert "decompresses to more than" in str(raised)
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.0f} MiB"
    assert len(server.requests) == 1  # an answer over its cap is not asked for again


async def test_a_compatible_answer_that_inflates_past_its_cap_is_refused_in_bounded_memory(
    server: LoopbackHostile,
) -> None:
    provider = CompatibleProvider(CompatibleOptions(base_url=server.base_url, model="m", dimensions=8))
    peak, raised = await peak_while(lambda: provider.embed(["def f(): pass"]))
    await provider.aclose()
    assert isinstance(raised, ProviderUnavailableError), raised
    assert "decompresses to more than" in str(raised)
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.0f} MiB"


async def test_a_batch_result_file_that_inflates_past_its_cap_is_refused_in_bounded_memory(
    server: LoopbackHostile,
) -> None:
    client = openai.AsyncOpenAI(api_key="sk-test-bomb-0000", base_url=server.base_url, http_client=capped_client())
    remote = BatchRemote(client)
    peak, raised = await peak_while(lambda: remote.download("file-output", answer_bytes(10, 1536)))
    await client.close()
    assert isinstance(raised, ProviderUnavailableError), raised
    assert "decompresses to more than" in str(raised)
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.0f} MiB"


async def test_answers_within_their_cap_are_read_whole_gzip_or_not() -> None:
    vectors = {"object": "list", "data": [{"index": 0, "embedding": [0.5] * 8}], "usage": {"prompt_tokens": 3}}

    def answer(request: Request) -> Answer:
        import gzip

        body = json_body(vectors)
        return (
            Answer(200, gzip.compress(body), {"Content-Encoding": "gzip"})
            if "gz" in request.path
            else Answer(200, body)
        )

    with LoopbackHostile(answer) as server:
        async with capped_client() as client:
            with anyio.fail_after(WAIT), response_cap(10_000):
                for path in ("/v1/plain", "/v1/gz"):
                    response = await client.get(server.base_url.removesuffix("/v1") + path)
                    assert response.json() == vectors
                    assert "content-encoding" not in response.headers
            with anyio.fail_after(WAIT), response_cap(20), pytest.raises(httpx2.DecodingError, match="more than 20"):
                await client.get(server.base_url.removesuffix("/v1") + "/v1/gz")
