"""The Files and Batches calls of the Batch API engine: finding unrecorded batches, and SDK errors made ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import httpx2
import openai
import pytest

from providers.batch_api.packing import request_line
from providers.batch_api.remote import BatchRemote, is_transient, translate
from providers.errors import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from tests.loopback_openai import LoopbackOpenAI

KEY = "sk-test-remote"
WAIT = 10
LINE = request_line("texts-0-1", {"model": "text-embedding-3-small", "input": ["x"]})


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as running:
        running.batches.clock = clock
        yield running


@pytest.fixture
async def remote(server: LoopbackOpenAI) -> AsyncIterator[BatchRemote]:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    yield BatchRemote(client, page_size=2, pages=3)
    await client.close()


@pytest.mark.anyio
async def test_an_unrecorded_batch_is_found_by_its_input_file_across_pages(remote: BatchRemote) -> None:
    with anyio.fail_after(WAIT):
        files = [await remote.upload(f"part-{i}.jsonl", LINE) for i in range(5)]
        created = [await remote.create(file_id, {"signal_hub_job": "j"}) for file_id in files]
        oldest = await remote.find(files[0])  # the third page of two
        assert oldest is not None and oldest.id == created[0].id and oldest.status == "validating"
        assert await remote.find("file-never-used") is None
        remote.pages = 2
        with pytest.raises(ProviderError, match="too many batches to list"):
            await remote.find(files[0])


@pytest.mark.anyio
async def test_cancelling_a_finished_batch_just_reads_it(remote: BatchRemote, clock: Clock) -> None:
    with anyio.fail_after(WAIT):
        batch = await remote.create(await remote.upload("in.jsonl", LINE), {})
        clock.now = 10_000.0
        cancelled = await remote.cancel(batch.id)
        assert cancelled.status == "completed" and cancelled.completed == 1
        text = await remote.download(cancelled.output_file_id or "")
        assert '"custom_id":"texts-0-1"' in text


@pytest.mark.anyio
async def test_a_rejected_key_and_unknown_ids_become_our_errors(remote: BatchRemote, server: LoopbackOpenAI) -> None:
    with anyio.fail_after(WAIT):
        with pytest.raises(ConfigurationError, match="found nothing while creating a batch"):
            await remote.create("file-missing", {})
        with pytest.raises(ConfigurationError, match="downloading file file-missing"):
            await remote.download("file-missing")
        with pytest.raises(ConfigurationError, match="cancelling batch batch-missing"):
            await remote.cancel("batch-missing")
        bad = BatchRemote(openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-wrong-key-123", max_retries=0))
        with pytest.raises(AuthenticationError, match="rejected the API key") as raised:
            await bad.upload("in.jsonl", LINE)
        assert "sk-wrong-key-123" not in str(raised.value)
        with pytest.raises(AuthenticationError):
            await bad.find("file-x")
        await bad.client.close()
    assert server.batches.files_uploaded == 0


def _status_error(status: int, code: str | None = None) -> openai.APIStatusError:
    request = httpx2.Request("GET", "http://127.0.0.1/v1/batches")
    response = httpx2.Response(status, request=request, json={"error": {"message": "m", "code": code}})
    kinds = {400: openai.BadRequestError, 429: openai.RateLimitError, 500: openai.InternalServerError}
    return kinds.get(status, openai.APIStatusError)("m", response=response, body={"message": "m", "code": code})


@pytest.mark.parametrize(
    ("status", "code", "ours", "transient"),
    [
        (429, "insufficient_quota", QuotaExceededError, False),
        (429, "rate_limit_exceeded", RateLimitError, True),
        (400, None, InputError, False),
        (500, None, ProviderUnavailableError, True),
        (408, None, ProviderUnavailableError, True),
    ],
)
def test_sdk_status_errors_map_to_one_of_ours(status: int, code: str | None, ours: type, transient: bool) -> None:
    error = _status_error(status, code)
    assert isinstance(translate(error, "polling"), ours) and is_transient(error) is transient


def test_timeouts_are_transient_and_other_failures_are_provider_errors() -> None:
    assert is_transient(TimeoutError()) and isinstance(translate(TimeoutError(), "x"), ProviderUnavailableError)
    assert not is_transient(ValueError()) and type(translate(ValueError("odd"), "x")) is ProviderError
