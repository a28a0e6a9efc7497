"""Ranking and near-duplicate grouping: pure numpy, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.service.similarity import find_duplicate_groups, normalise, preview, rank


def unit_rows(rows: int, dimensions: int = 16, seed: int = 0) -> np.ndarray:
    return normalise(np.random.default_rng(seed).standard_normal((rows, dimensions)))


def brute_force_groups(vectors: np.ndarray, threshold: float) -> set[tuple[int, ...]]:
    """Connected components of the 'scores at least threshold' graph, by repeated merging."""
    unit = normalise(vectors)
    scores = unit @ unit.T
    groups = [{i} for i in range(len(unit))]
    for i, j in itertools.combinations(range(len(unit)), 2):
        if scores[i, j] >= threshold:
            a = next(g for g in groups if i in g)
            b = next(g for g in groups if j in g)
            if a is not b:
                a |= b
                groups.remove(b)
    return {tuple(sorted(g)) for g in groups if len(g) > 1}


def test_rank_puts_the_most_similar_first_and_keeps_top_k() -> None:
    candidates = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    ranked = rank(np.array([1, 0.1], dtype=np.float32), candidates, top_k=3)
    assert [r.index for r in ranked] == [0, 2, 1]
    assert ranked[0].score == pytest.approx(1 / np.hypot(1, 0.1))
    assert ranked[0].score > ranked[1].score > ranked[2].score


def test_rank_breaks_ties_by_input_order_and_caps_top_k_at_the_candidates() -> None:
    candidates = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    ranked = rank(np.array([1, 0], dtype=np.float32), candidates, top_k=10)
    assert [r.index for r in ranked] == [1, 3, 0, 2]


def test_rank_refuses_a_top_k_below_one() -> None:
    with pytest.raises(ValueError, match="top_k"):
        rank(np.ones(2, dtype=np.float32), np.ones((3, 2), dtype=np.float32), top_k=0)


def test_rank_normalises_vectors_that_are_not_unit_length() -> None:
    candidates = np.array([[10, 0], [0.5, 0.5]], dtype=np.float32)
    ranked = rank(np.array([3, 3], dtype=np.float32), candidates, top_k=2)
    assert [r.index for r in ranked] == [1, 0]
    assert ranked[0].score == pytest.approx(1.0)


def test_near_copies_form_groups_largest_first_and_singletons_are_left_out() -> None:
    base = unit_rows(4, seed=1)
    noise = np.random.default_rng(2).standard_normal((3, 16)) * 0.01
    # 0, 4, 5 are one text thrice; 2 and 6 another; 1 and 3 stand alone.
    vectors = np.vstack([base, base[0] + noise[0], base[0] + noise[1], base[2] + noise[2]])
    found = find_duplicate_groups(vectors, threshold=0.95)
    assert [g.indexes for g in found.groups] == [(0, 4, 5), (2, 6)]
    assert found.pairs_checked == 7 * 6 // 2
    assert all(0.95 <= g.min_score <= 1.0 + 1e-6 for g in found.groups)


def test_min_score_is_the_least_similar_pair_of_a_chained_group() -> None:
    # a~b and b~c are above the threshold, a~c is not: single linkage joins all three.
    angles = np.radians([0.0, 20.0, 40.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    found = find_duplicate_groups(vectors, threshold=np.cos(np.radians(25)))
    (group,) = found.groups
    assert group.indexes == (0, 1, 2)
    assert group.min_score == pytest.approx(np.cos(np.radians(40)), abs=1e-6)


def test_groups_do_not_depend_on_the_block_size() -> None:
    rng = np.random.default_rng(3)
    centres = unit_rows(30, seed=4)
    vectors = centres[rng.integers(0, 30, 300)] + rng.standard_normal((300, 16)) * 0.03
    whole = find_duplicate_groups(vectors, 0.97, block_rows=1000)
    for block_rows in (1, 7, 64):
        blockwise = find_duplicate_groups(vectors, 0.97, block_rows=block_rows)
        assert [g.indexes for g in blockwise.groups] == [g.indexes for g in whole.groups]
        # The same sums in another order: equal up to float32 rounding.
        np.testing.assert_allclose(
            [g.min_score for g in blockwise.groups], [g.min_score for g in whole.groups], rtol=0, atol=1e-6
        )
    assert {g.indexes for g in whole.groups} == brute_force_groups(vectors, 0.97)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    threshold=st.floats(-1.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    block_rows=st.integers(1, 16),
)
def test_groups_match_brute_force_connected_components(rows: int, threshold: float, seed: int, block_rows: int) -> None:
    vectors = np.random.default_rng(seed).standard_normal((rows, 3)).astype(np.float32)
    found = find_duplicate_groups(vectors, threshold, block_rows=block_rows)
    assert {g.indexes for g in found.groups} == brute_force_groups(vectors, threshold)
    sizes = [len(g.indexes) for g in found.groups]
    assert sizes == sorted(sizes, reverse=True)


def test_a_zero_vector_matches_nothing() -> None:
    vectors = np.array([[0, 0], [1, 0], [1, 0]], dtype=np.float32)
    assert [g.indexes for g in find_duplicate_groups(vectors, 0.5).groups] == [(1, 2)]


def test_preview_is_the_first_non_blank_line_cut_to_width() -> None:
    assert preview("\n\n   def f(x):\n    return x\n") == "def f(x):"
    long = "x = " + "a" * 200
    cut = preview(long)
    assert len(cut) == 80 and cut.endswith("…") and cut.startswith("x = aaa")
    assert preview("   ") == ""
