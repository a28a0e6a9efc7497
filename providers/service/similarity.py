"""Ranking and near-duplicate grouping of embedded texts: pure, vectorised numpy, no I/O.

Scores are cosine similarities. Vectors are normalised here (a no-op for providers that already
return unit vectors), so a score is a dot product, computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DuplicateGroup", "Duplicates", "Ranked", "find_duplicate_groups", "normalise", "preview", "rank"]

Vectors = npt.NDArray[np.float32]

BLOCK_ROWS = 512
"""Rows per matrix product in `find_duplicate_groups`: memory stays at BLOCK_ROWS x n float32."""


@dataclass(frozen=True)
class Ranked:
    """One candidate's place in a ranking: its position in the input and its score."""

    index: int
    score: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Texts that are near-copies of one another.

    Members are linked by chains of pairs at or above the threshold (single linkage), so two
    members may be less alike than that: `min_score` is the lowest score of any two members.
    """

    indexes: tuple[int, ...]
    min_score: float


@dataclass(frozen=True)
class Duplicates:
    """The groups (largest first) and how many pairs were compared to find them."""

    groups: tuple[DuplicateGroup, ...]
    pairs_checked: int


def normalise(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length, as float32; all-zero rows stay zero (they match nothing)."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    unit: Vectors = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    return unit


def rank(query: npt.ArrayLike, candidates: npt.ArrayLike, top_k: int) -> list[Ranked]:
    """The `top_k` candidates most similar to `query`, best first (ties: the earlier index first)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    scores = normalise(candidates) @ normalise(query)
    k = min(top_k, len(scores))
    # argpartition finds the k best in O(n); only those are sorted. Sorting -score stably keeps ties in order.
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = best[np.lexsort((best, -scores[best]))]
    return [Ranked(int(i), float(scores[i])) for i in order]


def find_duplicate_groups(vectors: npt.ArrayLike, threshold: float, *, block_rows: int = BLOCK_ROWS) -> Duplicates:
    """Group texts whose vectors score at least `threshold` against another member, largest group first.

    Each block of rows is multiplied by the rows after it only (every pair once, never a full
    n x n matrix); pairs at or above the threshold are merged with a vectorised union-find.
    """
    unit = normalise(vectors)
    n = len(unit)
    parent = np.arange(n)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        scores = unit[start:stop] @ unit[start:].T
        rows, cols = np.nonzero(scores >= threshold)
        later = cols > rows  # column j of this block is text start + j: keep each pair once, no self-pairs
        _union(parent, rows[later] + start, cols[later] + start)
    roots = _roots(parent)
    groups = []
    for members in _members_by_root(roots):
        group = unit[members]
        least = min(float((group[i : i + block_rows] @ group.T).min()) for i in range(0, len(group), block_rows))
        groups.append(DuplicateGroup(tuple(int(i) for i in members), least))
    groups.sort(key=lambda group: (-len(group.indexes), group.indexes[0]))
    return Duplicates(tuple(groups), pairs_checked=n * (n - 1) // 2)


def preview(text: str, width: int = 80) -> str:
    """The first non-blank line of `text`, stripped and cut to `width` characters (an ellipsis marks a cut)."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def _roots(parent: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Point every node straight at its root (pointer jumping: parents always point to lower indexes)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent[:] = grand


def _union(parent: npt.NDArray[np.intp], a: npt.NDArray[np.intp], b: npt.NDArray[np.intp]) -> None:
    """Merge the sets of each pair (a[i], b[i]) in place, all pairs at once."""
    while len(a):
        roots = _roots(parent)
        root_a, root_b = roots[a], roots[b]
        apart = root_a != root_b
        a, b, root_a, root_b = a[apart], b[apart], root_a[apart], root_b[apart]
        # Hook each higher root under the lowest root it is paired with; a root hooked under another
        # root that moves this round is fixed by the next round's pointer jumping.
        np.minimum.at(parent, np.maximum(root_a, root_b), np.minimum(root_a, root_b))


def _members_by_root(roots: npt.NDArray[np.intp]) -> list[npt.NDArray[np.intp]]:
    """The indexes of each set with more than one member, in ascending order."""
    order = np.argsort(roots, kind="stable")
    sorted_roots = roots[order]
    starts = np.flatnonzero(np.r_[True, sorted_roots[1:] != sorted_roots[:-1]])
    return [members for members in np.split(order, starts[1:]) if len(members) > 1]
