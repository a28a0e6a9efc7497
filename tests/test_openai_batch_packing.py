"""Batch API packing and result reading: pure functions, tested without I/O (limits with hypothesis)."""

from __future__ import annotations

import base64
import itertools
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.batch_api import BatchApiOptions, BatchLimits, custom_id, parse_custom_id, plan_files
from providers.batch_api.planning import plan_job, request_body
from providers.batch_api.results import read_results
from providers.batch_api.state import RequestRow
from providers.cost import batch_price_per_million, price_per_million
from providers.errors import ConfigurationError, InputError
from providers.remote.batching import RequestLimits
from providers.text.tokens import Utf8ByteEstimate

requests_strategy = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 500)), max_size=200)


@given(
    requests=requests_strategy,
    max_requests=st.integers(1, 30),
    max_file_bytes=st.integers(500, 5000),
    max_inputs=st.integers(40, 400),
)
@settings(max_examples=200, deadline=None)
def test_every_file_keeps_all_three_batch_limits_and_the_request_order(
    requests: list[tuple[int, int]], max_requests: int, max_file_bytes: int, max_inputs: int
) -> None:
    limits = BatchLimits(
        max_requests=max_requests,
        max_file_bytes=max_file_bytes,
        max_inputs=max_inputs,
        request=RequestLimits(max_inputs=40, max_input_tokens=10, max_request_tokens=100),
    )
    files = plan_files(requests, limits)
    assert [i for part in files for i in part] == list(range(len(requests)))
    for part in files:
        assert len(part) <= max_requests
        assert sum(requests[i][0] for i in part) <= max_inputs
        assert sum(requests[i][1] for i in part) <= max_file_bytes
    # Greedy is tight: the next file's first request would not have fitted in the file before it.
    for before, after in itertools.pairwise(files):
        first = requests[after[0]]
        assert (
            len(before) == max_requests
            or sum(requests[i][0] for i in before) + first[0] > max_inputs
            or sum(requests[i][1] for i in before) + first[1] > max_file_bytes
        )


def test_the_default_limits_are_the_batch_apis() -> None:
    limits = BatchLimits()
    assert (limits.max_requests, limits.max_file_bytes, limits.max_inputs) == (50_000, 200 * 1024 * 1024, 50_000)
    # 2048-input requests: 24 fill a batch of at most 50,000 inputs; the 25th opens the next file.
    files = plan_files([(2048, 1000)] * 25, limits)
    assert [len(part) for part in files] == [24, 1]
    many_small = plan_files([(1, 10)] * 50_001, limits)
    assert [len(part) for part in many_small] == [50_000, 1]
    big = plan_files([(10, 150 * 1024 * 1024), (10, 60 * 1024 * 1024)], limits)
    assert big == [[0], [1]]


def test_a_request_that_fits_no_file_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        plan_files([(1, 10), (1, 201 * 1024 * 1024)], BatchLimits())
    with pytest.raises(ValueError, match="more inputs than a batch"):
        BatchLimits(max_inputs=100)


@given(st.integers(0, 10**9), st.integers(1, 10**6))
def test_a_custom_id_names_exactly_its_texts(start: int, length: int) -> None:
    assert parse_custom_id(custom_id(start, start + length)) == range(start, start + length)


@pytest.mark.parametrize("value", ["texts-5-5", "texts-7-3", "other-1-2", "texts-1-2-3", None, 12])
def test_ids_that_are_not_ours_name_no_texts(value: object) -> None:
    assert parse_custom_id(value) is None


@given(st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=60), min_size=1, max_size=120))
@settings(max_examples=100, deadline=None)
def test_planned_requests_cover_the_work_list_in_order_within_the_request_limits(texts: list[str]) -> None:
    options = BatchApiOptions(
        limits=BatchLimits(request=RequestLimits(max_inputs=7, max_input_tokens=50, max_request_tokens=120))
    )
    tokenizer = Utf8ByteEstimate()
    plan = plan_job(texts, tokenizer, options)
    assert [p for _, start, stop, _ in plan.requests for p in range(start, stop)] == list(range(len(texts)))
    for request_id, start, stop, tokens in plan.requests:
        assert parse_custom_id(request_id) == range(start, stop)
        assert stop - start <= 7 and tokens <= 120
        row = RequestRow(request_id, start, stop, tokens, "pending", 0, None, None)
        line = json.loads(request_body(row, texts, tokenizer, "text-embedding-3-small", 1536, options))
        assert line["custom_id"] == request_id and line["url"] == "/v1/embeddings" and line["method"] == "POST"
        assert all(tokenizer.count(text) <= 50 for text in line["body"]["input"])
        assert sum(tokenizer.count(text) for text in line["body"]["input"]) == tokens


def test_over_long_texts_are_cut_and_reported_or_refused() -> None:
    limits = BatchLimits(request=RequestLimits(max_inputs=10, max_input_tokens=20, max_request_tokens=100))
    plan = plan_job(["short", "x" * 50], Utf8ByteEstimate(), BatchApiOptions(limits=limits))
    assert plan.dropped == {1: 30}
    with pytest.raises(InputError, match="position 1"):
        plan_job(["short", "x" * 50], Utf8ByteEstimate(), BatchApiOptions(limits=limits, overlong="error"))


def _answer(request_id: str, vectors: list[list[float]], tokens: int, *, shuffle: bool = False) -> str:
    data = [
        {"object": "embedding", "index": i, "embedding": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()}
        for i, v in enumerate(vectors)
    ]
    if shuffle:
        random.Random(1).shuffle(data)
    body = {"object": "list", "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return json.dumps({"custom_id": request_id, "response": {"status_code": 200, "body": body}, "error": None})


def test_answers_are_read_back_by_custom_id_and_index_whatever_their_order() -> None:
    lines = [_answer("texts-2-4", [[0, 3], [4, 0]], 7, shuffle=True), _answer("texts-0-2", [[1, 0], [0, 2]], 5)]
    outcomes = {o.custom_id: o for o in read_results("\n".join(lines) + "\n", 2)}
    assert outcomes["texts-0-2"].positions == range(0, 2) and outcomes["texts-2-4"].positions == range(2, 4)
    np.testing.assert_allclose(outcomes["texts-2-4"].vectors, [[0, 1], [1, 0]])  # normalised, in index order
    assert outcomes["texts-0-2"].tokens == 5 and outcomes["texts-2-4"].ok


@pytest.mark.parametrize(
    ("vectors", "reason"),
    [
        ([[1, 0]], "1 vectors for 2 texts"),
        ([[1, 0], [1, 0, 0]], "length 3"),
        ([[1, 0], [float("nan"), 0]], "NaN"),
        ([[1, 0], [0, 0]], "all-zero"),
    ],
)
def test_a_wrong_answer_is_not_kept_and_is_sent_again(vectors: list[list[float]], reason: str) -> None:
    (outcome,) = read_results(_answer("texts-0-2", vectors, 3), 2)
    assert not outcome.ok and outcome.retryable and reason in (outcome.error or "")


def test_failed_requests_say_whether_a_retry_can_help() -> None:
    def failure(request_id: str, status: int, code: str) -> str:
        body = {"error": {"message": "boom", "type": code, "code": code}}
        return json.dumps({"custom_id": request_id, "response": {"status_code": status, "body": body}, "error": None})

    expired = json.dumps(
        {"custom_id": "texts-4-5", "response": None, "error": {"code": "batch_expired", "message": "late"}}
    )
    text = "\n".join(
        [
            failure("texts-0-1", 500, "server_error"),
            failure("texts-1-2", 400, "invalid_request_error"),
            expired,
            "not json",
            json.dumps({"custom_id": "someone-else"}),
            "",
        ]
    )
    outcomes = {o.custom_id: o for o in read_results(text, 2)}
    assert set(outcomes) == {"texts-0-1", "texts-1-2", "texts-4-5"}
    assert outcomes["texts-0-1"].retryable and not outcomes["texts-1-2"].retryable
    assert outcomes["texts-4-5"].expired and outcomes["texts-4-5"].retryable


def test_the_batch_price_is_half_the_price_table_unless_overridden() -> None:
    for model in ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"):
        assert batch_price_per_million("openai", model) == pytest.approx(price_per_million("openai", model) / 2)
    assert batch_price_per_million("openai", "text-embedding-3-small", {"text-embedding-3-small": 1.0}) == 0.5
    overridden = {"text-embedding-3-small@batch": 0.004}
    assert batch_price_per_million("openai", "text-embedding-3-small", overridden) == 0.004
    assert batch_price_per_million("openai", "unknown-model") is None


def test_options_check_the_model_and_dimensions() -> None:
    assert BatchApiOptions(dimensions=256).resolved_dimensions("text-embedding-3-small") == 256
    assert BatchApiOptions().resolved_dimensions("text-embedding-3-large") == 3072
    assert BatchApiOptions(dimensions=256).dimensions_param("text-embedding-ada-002") is None
    with pytest.raises(ConfigurationError, match="unknown OpenAI model"):
        BatchApiOptions().resolved_dimensions("gpt-4")
    with pytest.raises(ConfigurationError, match="cannot make 256"):
        BatchApiOptions(dimensions=256).resolved_dimensions("text-embedding-ada-002")
    with pytest.raises(ConfigurationError, match="poll"):
        BatchApiOptions(poll_initial=0)


def test_the_public_names_are_pinned() -> None:
    import providers.batch_api as batch_api

    assert sorted(batch_api.__all__) == sorted(
        [
            "BATCH_API_LIMITS",
            "BatchApiEngine",
            "BatchApiOptions",
            "BatchCostEstimate",
            "BatchJobResult",
            "BatchJobStatus",
            "BatchLimits",
            "BatchProgress",
            "BatchState",
            "batch_engine",
            "custom_id",
            "embed_with_batch_api",
            "parse_custom_id",
            "plan_files",
        ]
    )
    assert all(hasattr(batch_api, name) for name in batch_api.__all__)
