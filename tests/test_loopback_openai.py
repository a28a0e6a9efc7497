"""The loopback OpenAI server, exercised through the real openai SDK (no mocks)."""

from __future__ import annotations

import base64
import json
import re
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import openai
import pytest

from tests.loopback_openai import (
    MODEL_DIMENSIONS,
    LoopbackOpenAI,
    count_tokens,
    embedding_for,
    format_duration,
)

MODEL = "text-embedding-3-small"
KEY = "sk-test-0123456789abcdef"
DURATION = re.compile(r"^(\d+ms|\d+(\.\d+)?s)$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Connect = Callable[..., openai.OpenAI]


@pytest.fixture(scope="module")
def connect() -> Iterator[Connect]:
    """Makes SDK clients sharing one HTTP pool: building an SSL context per client costs ~50 ms."""
    with openai.DefaultHttpxClient() as http_client:

        def make(server: LoopbackOpenAI, api_key: str = KEY) -> openai.OpenAI:
            return openai.OpenAI(
                base_url=server.base_url, api_key=api_key, max_retries=0, timeout=5, http_client=http_client
            )

        yield make


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as running:
        yield running


@pytest.fixture
def server(shared_server: LoopbackOpenAI) -> Iterator[LoopbackOpenAI]:
    shared_server.reset_counters()
    yield shared_server
    shared_server.clear_faults()
    shared_server.release_hung()
    wait_until(lambda: shared_server.hung_count == 0)


@pytest.fixture
def client(server: LoopbackOpenAI, connect: Connect) -> openai.OpenAI:
    return connect(server)


def embed(client: openai.OpenAI, inputs: Any, model: str = MODEL, **options: Any) -> Any:
    return client.embeddings.create(input=inputs, model=model, **options)


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def vector(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


# encodings, dimensions, usage, determinism


def test_float_and_base64_decode_to_the_same_vector(client: openai.OpenAI) -> None:
    as_float = embed(client, "hello world", encoding_format="float").data[0].embedding
    as_base64 = embed(client, "hello world", encoding_format="base64").data[0].embedding
    sdk_default = embed(client, "hello world").data[0].embedding

    assert isinstance(as_base64, str)
    decoded = np.frombuffer(base64.b64decode(as_base64), dtype="<f4")
    assert np.array_equal(vector(as_float), decoded)
    assert np.array_equal(vector(sdk_default), decoded)
    assert np.array_equal(decoded, embedding_for("hello world", MODEL))


@pytest.mark.parametrize("model", sorted(MODEL_DIMENSIONS))
def test_each_model_returns_unit_vectors_of_its_size(client: openai.OpenAI, model: str) -> None:
    response = embed(client, ["alpha", "beta"], model=model)

    assert response.model == model
    assert [item.index for item in response.data] == [0, 1]
    for item in response.data:
        assert len(item.embedding) == MODEL_DIMENSIONS[model]
        assert np.linalg.norm(item.embedding) == pytest.approx(1.0, abs=1e-5)


def test_dimensions_give_the_renormalised_prefix(client: openai.OpenAI) -> None:
    short = vector(embed(client, "alpha", dimensions=256).data[0].embedding)
    full = embedding_for("alpha", MODEL)

    assert short.shape == (256,)
    assert np.allclose(short, full[:256] / np.linalg.norm(full[:256]), atol=1e-6)
    assert np.array_equal(short, embedding_for("alpha", MODEL, 256))


def test_usage_reports_loopback_token_counts(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    texts = ["hello world", "Hello, wonderful world!"]
    usage = embed(client, texts).usage

    assert count_tokens("hello world") == 4  # a chars/4 estimate would say 2 or 3
    assert count_tokens("Hello, wonderful world!") == 9
    assert usage.prompt_tokens == usage.total_tokens == 13
    assert server.tokens_served == 13


def test_token_array_inputs_are_accepted(client: openai.OpenAI) -> None:
    single = embed(client, [5, 6, 7])
    several = embed(client, [[5, 6, 7], [8]])

    assert single.usage.prompt_tokens == 3
    assert several.usage.prompt_tokens == 4
    assert np.array_equal(vector(single.data[0].embedding), embedding_for([5, 6, 7]))
    assert np.array_equal(vector(several.data[0].embedding), vector(single.data[0].embedding))


def test_vectors_are_deterministic(client: openai.OpenAI, connect: Connect) -> None:
    first = embed(client, ["same text", "other text"]).data
    again = embed(client, "same text").data

    with LoopbackOpenAI(api_key=KEY) as fresh:
        elsewhere = embed(connect(fresh), "same text").data

    assert first[0].embedding == again[0].embedding == elsewhere[0].embedding
    assert first[0].embedding != first[1].embedding
    large = embed(client, "same text", model="text-embedding-3-large").data[0].embedding
    assert large[:1536] != first[0].embedding


# errors


def test_wrong_key_is_rejected_with_a_masked_key(server: LoopbackOpenAI, connect: Connect) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    with pytest.raises(openai.AuthenticationError) as caught:
        embed(connect(server, api_key=wrong), "hello")

    error = caught.value
    assert error.status_code == 401
    assert error.code == "invalid_api_key"
    assert error.type == "invalid_request_error"
    message = error.body["message"]  # type: ignore[index]
    assert message.startswith("Incorrect API key provided: sk-wr")
    assert "mnop." in message
    assert wrong not in message


def post_raw(server: LoopbackOpenAI, body: bytes, headers: dict[str, str], path: str = "/embeddings") -> Any:
    request = urllib.request.Request(server.base_url + path, data=body, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    with caught.value as response:
        return response.status, json.loads(response.read())["error"]


def test_raw_requests_without_key_or_json_or_route(server: LoopbackOpenAI) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    status, error = post_raw(server, b"{}", {})
    assert status == 401
    assert error["message"].startswith("You didn't provide an API key.")
    assert post_raw(server, b"not json", auth)[0] == 400
    status, error = post_raw(server, b"{}", auth, path="/chat/completions")
    assert (status, error["message"]) == (404, "Invalid URL (POST /v1/chat/completions)")


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        embed(client, "hello", model="text-embedding-4-huge")

    assert caught.value.code == "model_not_found"


def test_ada_rejects_dimensions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        embed(client, "hello", model="text-embedding-ada-002", dimensions=256)

    assert caught.value.body["message"] == "This model does not support specifying dimensions."  # type: ignore[index]


@pytest.mark.parametrize("inputs", ["", ["fine", ""], [], [[]]])
def test_empty_inputs_are_invalid(client: openai.OpenAI, inputs: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        embed(client, inputs)

    assert caught.value.body["message"].startswith("'$.input' is invalid.")  # type: ignore[index]


def test_at_most_2048_inputs(client: openai.OpenAI) -> None:
    assert len(embed(client, ["x"] * 2048, dimensions=8).data) == 2048
    with pytest.raises(openai.BadRequestError) as caught:
        embed(client, ["x"] * 2049)

    assert caught.value.body["message"] == (  # type: ignore[index]
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
    )


def test_an_input_over_8192_tokens_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        embed(client, ["short", "a " * 8193])

    assert caught.value.body["message"] == (  # type: ignore[index]
        "This model's maximum context length is 8192 tokens, however you requested 8193 tokens "
        "(8193 in your prompt; 0 for the completion). Please reduce your prompt; or completion length."
    )


def test_a_request_over_300000_tokens_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        embed(client, ["word " * 7500] * 41)

    assert caught.value.code == "max_tokens_per_request"
    assert caught.value.body["message"] == "Requested 307500 tokens, max 300000 tokens per request"  # type: ignore[index]


def test_limits_are_configurable(connect: Connect) -> None:
    with LoopbackOpenAI(api_key=KEY, max_inputs=2, max_input_tokens=3, max_request_tokens=4) as server:
        client = connect(server)
        assert embed(client, ["a b", "c d"]).usage.total_tokens == 4
        for inputs in (["a", "b", "c"], "a b c d", ["a b c", "d e"]):
            with pytest.raises(openai.BadRequestError):
                embed(client, inputs)


# rate limits


def test_rpm_limit_answers_429_with_headers(connect: Connect) -> None:
    # 3 RPM with a 1-second "minute": one request comes back every 333 ms.
    with LoopbackOpenAI(api_key=KEY, rpm=3, time_scale=60) as server:
        client = connect(server)
        remaining = []
        for _ in range(3):
            raw = client.embeddings.with_raw_response.create(input="hi", model=MODEL)
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            assert DURATION.match(raw.headers["x-ratelimit-reset-requests"])
            assert raw.headers["x-ratelimit-limit-tokens"] == str(1_000_000_000)
            remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]

        with pytest.raises(openai.RateLimitError) as caught:
            embed(client, "hi")

        error = caught.value
        assert (error.code, error.type) == ("rate_limit_exceeded", "requests")
        assert error.body["message"].startswith(  # type: ignore[index]
            "Rate limit reached for text-embedding-3-small in organization org-loopback on requests per min "
            "(RPM): Limit 3, Used 3, Requested 1. Please try again in "
        )
        headers = error.response.headers
        retry_after_ms = int(headers["retry-after-ms"])
        assert 0 < retry_after_ms <= 334
        assert headers["retry-after"] == "1"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert server.rate_limited_count == 1

        time.sleep(retry_after_ms / 1000)
        assert embed(client, "hi").data


def test_tpm_limit_answers_429_and_rejects_oversized_requests(connect: Connect) -> None:
    with LoopbackOpenAI(api_key=KEY, tpm=10, time_scale=60) as server:
        client = connect(server)
        embed(client, "a b c d e f")
        with pytest.raises(openai.RateLimitError) as caught:
            embed(client, "a b c d e f")
        assert caught.value.type == "tokens"
        assert "tokens per min (TPM): Limit 10, Used 6, Requested 6." in caught.value.body["message"]  # type: ignore[index]
        assert int(caught.value.response.headers["retry-after-ms"]) > 0

        with pytest.raises(openai.RateLimitError) as caught:
            embed(client, "a " * 11)
        assert caught.value.body["message"].startswith("Request too large for text-embedding-3-small")  # type: ignore[index]
        assert server.rate_limited_count == 2


# injected faults


@pytest.mark.parametrize(
    ("fault", "error_class", "status", "code"),
    [
        ("429", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("insufficient_quota", openai.RateLimitError, 429, "insufficient_quota"),
        ("500", openai.InternalServerError, 500, None),
        ("503", openai.InternalServerError, 503, None),
    ],
)
def test_injected_error_answers(
    client: openai.OpenAI,
    server: LoopbackOpenAI,
    fault: Any,
    error_class: type[openai.APIStatusError],
    status: int,
    code: str | None,
) -> None:
    server.inject(fault)
    with pytest.raises(error_class) as caught:
        embed(client, "hello")

    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert embed(client, "hello").data
    assert server.status_counts == {status: 1, 200: 1}


def test_injected_429_carries_the_given_retry_after(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    server.inject("429", retry_after_ms=1234)
    with pytest.raises(openai.RateLimitError) as caught:
        embed(client, "hello")

    headers = caught.value.response.headers
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("1234", "2")
    assert "Please try again in 1.234s." in caught.value.body["message"]  # type: ignore[index]


def test_faults_are_consumed_in_order(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    server.inject("500")
    server.inject("503", times=2)
    assert server.pending_faults == ["500", "503", "503"]

    statuses = []
    for _ in range(4):
        try:
            embed(client, "hello")
            statuses.append(200)
        except openai.APIStatusError as error:
            statuses.append(error.status_code)

    assert statuses == [500, 503, 503, 200]
    assert [record.fault for record in server.requests] == ["500", "503", "503", None]


def test_unknown_fault_is_refused(server: LoopbackOpenAI) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        server.inject("teapot")  # type: ignore[arg-type]


def test_hang_makes_the_client_time_out(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    server.inject("hang")
    with pytest.raises(openai.APITimeoutError):
        embed(client, "hello", timeout=0.2)

    assert server.hung_count == 1
    assert embed(client, "hello").data


def test_released_hang_answers_normally(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    server.inject("hang")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(embed, client, "hello")
        wait_until(lambda: server.hung_count == 1)
        server.release_hung()
        assert pending.result(timeout=5).data[0].index == 0

    assert server.hung_count == 0


def test_close_does_not_wait_for_a_hung_request(connect: Connect) -> None:
    server = LoopbackOpenAI(api_key=KEY).start()
    server.inject("hang")
    with ThreadPoolExecutor(1) as pool:
        pending: Future[Any] = pool.submit(embed, connect(server), "hello")
        wait_until(lambda: server.hung_count == 1)

        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 1

        with pytest.raises(openai.APIConnectionError):
            pending.result(timeout=5)


def test_drop_closes_the_connection_without_an_answer(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    server.inject("drop")
    with pytest.raises(openai.APIConnectionError):
        embed(client, "hello")

    assert server.requests[0].status is None
    assert embed(client, "hello").data


def test_shuffle_returns_correct_vectors_out_of_order(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    texts = [f"text {number}" for number in range(6)]
    server.inject("shuffle")
    data = embed(client, texts).data

    indexes = [item.index for item in data]
    assert indexes != sorted(indexes)
    assert sorted(indexes) == list(range(6))
    for item in data:
        assert np.array_equal(vector(item.embedding), embedding_for(texts[item.index]))


# counters, concurrency, lifecycle


def test_counters_record_every_request(client: openai.OpenAI, server: LoopbackOpenAI) -> None:
    embed(client, ["one", "two"])
    server.inject("500")
    with pytest.raises(openai.InternalServerError):
        embed(client, ["three"])
    embed(client, ["three", "four"])

    assert server.request_count == 3
    assert server.status_counts == {200: 2, 500: 1}
    assert server.inputs_embedded == 4
    assert server.tokens_served == sum(map(count_tokens, ["one", "two", "three", "four"]))
    assert [record.inputs for record in server.requests] == [["one", "two"], ["three"], ["three", "four"]]
    assert server.embedded_inputs() == ["one", "two", "three", "four"]

    server.reset_counters()
    assert (server.request_count, server.status_counts, server.inputs_embedded, server.tokens_served) == (0, {}, 0, 0)
    assert server.requests == []


@pytest.mark.anyio
async def test_dozens_of_concurrent_async_requests(server: LoopbackOpenAI) -> None:
    texts = [f"chunk {number}" for number in range(60)]
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=5) as client:

        async def embed_one(text: str) -> None:
            response = await client.embeddings.create(input=[text], model=MODEL)
            assert np.array_equal(vector(response.data[0].embedding), embedding_for(text))

        async with anyio.create_task_group() as group:
            for text in texts:
                group.start_soon(embed_one, text)

    assert sorted(server.embedded_inputs()) == sorted(texts)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.012, "12ms"), (0.0004, "1ms"), (1, "1s"), (123.5, "2m3.5s"), (360, "6m0s"), (3600, "1h0m0s")],
)
def test_durations_are_formatted_like_the_api(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.slow
def test_runs_standalone() -> None:
    command = [sys.executable, "-m", "tests.loopback_openai", "--port", "0", "--rpm", "5", "--api-key", KEY]
    root = Path(__file__).resolve().parents[1]
    with subprocess.Popen(command, cwd=root, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            with selectors.DefaultSelector() as selector:
                selector.register(process.stderr, selectors.EVENT_READ)
                assert selector.select(timeout=10), "the server printed nothing"
            base_url = process.stderr.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)

            with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=5) as client:
                raw = client.embeddings.with_raw_response.create(input="hello", model=MODEL)
            assert raw.headers["x-ratelimit-limit-requests"] == "5"
        finally:
            process.terminate()
            assert process.wait(timeout=5) == 0
