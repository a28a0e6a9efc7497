"""Long texts: truncate reports what was dropped; split embeds every token in overlapping windows."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from providers.local import LocalProvider
from providers.local_model.long_texts import InputPlan, Window, combine_windows, plan_windows

CLS, SEP = 101, 102


def text_ids(length: int) -> list[int]:
    """A tokenized text of `length` own tokens, numbered 1000.. so windows can be read back."""
    return [CLS, *range(1000, 1000 + length), SEP]


def own_tokens(window: Window) -> list[int]:
    return window.ids[1:-1]


def test_a_text_that_fits_is_one_window_with_either_policy() -> None:
    for policy in ("truncate", "split"):
        plan = plan_windows([text_ids(10)], specials=(1, 1), max_length=16, policy=policy, overlap=4)
        assert [w.ids for w in plan.windows] == [text_ids(10)]
        assert plan.dropped == {} and plan.tokens == 12


def test_truncate_keeps_the_beginning_and_reports_the_dropped_tokens() -> None:
    plan = plan_windows([text_ids(30), text_ids(5)], specials=(1, 1), max_length=16, policy="truncate", overlap=4)
    assert plan.windows[0].ids == [CLS, *range(1000, 1014), SEP]
    assert plan.dropped == {0: 16}
    assert plan.tokens == 16 + 7


def test_split_windows_overlap_and_cover_every_token_once_in_order() -> None:
    plan = plan_windows([text_ids(30)], specials=(1, 1), max_length=16, policy="split", overlap=4)
    pieces = [own_tokens(w) for w in plan.windows]
    assert all(w.ids[0] == CLS and w.ids[-1] == SEP and len(w.ids) <= 16 for w in plan.windows)
    for before, after in itertools.pairwise(pieces):
        assert before[-4:] == after[:4]  # consecutive windows share `overlap` tokens
    covered = pieces[0] + [t for piece in pieces[1:] for t in piece[4:]]
    assert covered == list(range(1000, 1030))
    assert [w.weight for w in plan.windows] == [len(p) for p in pieces] == [14, 14, 10]
    assert plan.dropped == {}
    assert plan.tokens == sum(len(w.ids) for w in plan.windows)


def test_split_needs_an_overlap_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_windows([text_ids(30)], specials=(1, 1), max_length=16, policy="split", overlap=14)


def test_windows_are_combined_by_a_token_weighted_mean_renormalised() -> None:
    plan = InputPlan([Window(0, [], 3), Window(0, [], 1), Window(1, [], 5)])
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    combined = combine_windows(vectors, plan, text_count=2)
    np.testing.assert_allclose(combined[0], np.array([3.0, 1.0]) / np.sqrt(10), rtol=1e-6)
    np.testing.assert_allclose(combined[1], [0.6, 0.8], rtol=1e-6)


# --- with the real model -------------------------------------------------------------------

HTTP_HALF = " ".join(
    f"def send_request_{i}(session, url, headers): response = session.get(url, headers=headers, timeout=30)"
    for i in range(8)
)
SQL_HALF = " ".join(
    f"SELECT name, total FROM orders_{i} JOIN customers ON orders.customer_id = customers.id WHERE total > {i}"
    for i in range(8)
)


@pytest.mark.anyio
@pytest.mark.slow
async def test_split_lets_the_end_of_a_long_text_count(shared_data_dir: Path) -> None:
    truncate = LocalProvider(data_dir=shared_data_dir, long_texts="truncate")
    split = LocalProvider(data_dir=shared_data_dir, long_texts="split", split_overlap=32)
    long_text = f"{HTTP_HALF} {SQL_HALF}"
    cut = await truncate.embed([long_text])
    whole = await split.embed([long_text])
    assert 0 in cut.truncated and whole.truncated == {}
    second_half = (await truncate.embed([SQL_HALF])).vectors[0]
    assert float(whole.vectors[0] @ second_half) > float(cut.vectors[0] @ second_half) + 0.05
    np.testing.assert_allclose(np.linalg.norm(whole.vectors, axis=1), 1.0, atol=1e-5)
    # Every token was embedded, the overlap twice: more tokens than the text has.
    assert whole.tokens > cut.tokens + cut.truncated[0]


@pytest.mark.anyio
@pytest.mark.slow
async def test_split_vector_is_the_token_weighted_mean_of_its_windows(shared_data_dir: Path) -> None:
    # "word" is one token: 400 of them give windows of 254 and 210 own tokens (overlap 64).
    split = LocalProvider(data_dir=shared_data_dir, long_texts="split", split_overlap=64)
    truncate = LocalProvider(data_dir=shared_data_dir, long_texts="truncate")
    whole = (await split.embed(["word " * 400])).vectors[0]
    first, second = (await truncate.embed(["word " * 254, "word " * 210])).vectors
    expected = 254 * first + 210 * second
    np.testing.assert_allclose(whole, expected / np.linalg.norm(expected), atol=1e-5)


@pytest.mark.anyio
@pytest.mark.slow
async def test_short_texts_are_the_same_under_both_policies(shared_data_dir: Path) -> None:
    texts = ["def calculate_total(items):", "import numpy as np"]
    truncate = await LocalProvider(data_dir=shared_data_dir, long_texts="truncate").embed(texts)
    split = await LocalProvider(data_dir=shared_data_dir, long_texts="split").embed(texts)
    np.testing.assert_allclose(split.vectors, truncate.vectors, atol=1e-6)
    assert split.tokens == truncate.tokens
