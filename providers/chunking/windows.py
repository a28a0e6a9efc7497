"""Line and paragraph windows: chunks of whole lines within a token budget, for text that has no syntax tree.

Spans are `(first, last)` line indexes (0-based, inclusive). Costs are tokens per line; a line
over the budget on its own is a window of its own (a chunk never cuts a line).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

__all__ = ["LineCosts", "line_windows", "paragraph_windows"]


class LineCosts:
    """Tokens of any run of lines, from the tokens of each line (prefix sums)."""

    def __init__(self, per_line: Sequence[int]) -> None:
        self.per_line = per_line
        self._prefix = [0, *accumulate(per_line)]

    def __call__(self, first: int, last: int) -> int:
        return self._prefix[last + 1] - self._prefix[first]


def line_windows(costs: LineCosts, first: int, last: int, limit: int) -> list[tuple[int, int]]:
    """Consecutive windows of lines `first..last`, each as many lines as fit in `limit` tokens."""
    spans: list[tuple[int, int]] = []
    start = first
    for line in range(first, last + 1):
        if line > start and costs(start, line) > limit:
            spans.append((start, line - 1))
            start = line
    if start <= last:
        spans.append((start, last))
    return spans


def paragraph_windows(
    lines: Sequence[str], costs: LineCosts, first: int, last: int, limit: int
) -> list[tuple[int, int]]:
    """Windows that end where a paragraph ends (a blank line) when they can; lines where a paragraph is too big."""
    paragraphs: list[tuple[int, int]] = []
    start = first
    for line in range(first, last + 1):
        blank = not lines[line].strip()
        ends_here = line == last or (blank and lines[line + 1].strip() != "")
        if ends_here:  # blank lines stay with the paragraph before them
            paragraphs.append((start, line))
            start = line + 1
    ends = {end for _, end in paragraphs}
    spans: list[tuple[int, int]] = []
    for start, end in paragraphs:
        if costs(start, end) > limit:
            spans.extend(line_windows(costs, start, end, limit))
        elif spans and spans[-1][1] in ends and costs(spans[-1][0], end) <= limit:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans
