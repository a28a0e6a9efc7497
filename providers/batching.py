"""Packing texts into API requests: pure functions of token counts and limits, no I/O.

```python
limits = RequestLimits(max_inputs=2048, max_input_tokens=8192, max_request_tokens=300_000)
cut = overlong_items(counts, limits, policy="truncate")   # {index: tokens to drop}
batches = plan_batches([min(c, limits.max_input_tokens) for c in counts], limits)
```

`plan_batches` keeps input order: it walks the texts once and closes a request when the next
text would break any of the three limits. For texts in a fixed order that greedy cut gives the
fewest requests possible, and contiguous index ranges make requests easy to read in logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import InputError

__all__ = ["OPENAI_LIMITS", "BatchPacker", "OverlongPolicy", "RequestLimits", "overlong_items", "plan_batches"]

OverlongPolicy = Literal["truncate", "error"]
"""What to do with a text over `max_input_tokens`: cut it to fit (and report it) or refuse the call."""

_MAX_POSITIONS_NAMED = 10


@dataclass(frozen=True, kw_only=True)
class RequestLimits:
    """What one embeddings request may hold: a per-endpoint profile."""

    max_inputs: int = 2048
    """Texts per request."""
    max_input_tokens: int = 8192
    """Tokens in one text."""
    max_request_tokens: int = 300_000
    """Tokens summed over a request's texts."""

    def __post_init__(self) -> None:
        if min(self.max_inputs, self.max_input_tokens, self.max_request_tokens) < 1:
            raise ValueError(f"every request limit must be positive: {self}")
        if self.max_input_tokens > self.max_request_tokens:
            raise ValueError(f"max_input_tokens cannot exceed max_request_tokens: {self}")


OPENAI_LIMITS = RequestLimits()
"""OpenAI's limits for text-embedding-3-small/-large and ada-002."""


def overlong_items(
    token_counts: Sequence[int] | Mapping[int, int], limits: RequestLimits, policy: OverlongPolicy
) -> dict[int, int]:
    """Index → tokens over the per-input limit, for every text that must be cut.

    `token_counts` lists every text's count, or maps the index of some texts to theirs.
    With `policy="error"` an over-long text raises `InputError` naming the positions instead.
    """
    limit = limits.max_input_tokens
    pairs = token_counts.items() if isinstance(token_counts, Mapping) else enumerate(token_counts)
    over = {i: count - limit for i, count in sorted(pairs) if count > limit}
    if over and policy == "error":
        named = ", ".join(str(i) for i in list(over)[:_MAX_POSITIONS_NAMED])
        more = f" and {len(over) - _MAX_POSITIONS_NAMED} more" if len(over) > _MAX_POSITIONS_NAMED else ""
        raise InputError(
            f"text longer than {limits.max_input_tokens:,} tokens at position{'s' if len(over) > 1 else ''} "
            f"{named}{more}: split it into smaller chunks, or let the provider truncate over-long texts."
        )
    return over


def plan_batches(token_counts: Sequence[int], limits: RequestLimits) -> list[list[int]]:
    """Group text indexes into requests, in input order, each within all three limits.

    Every count must already be within `max_input_tokens` (cut over-long texts first).
    """
    packer = BatchPacker(limits)
    batches = [batch for index, count in enumerate(token_counts) if (batch := packer.add(index, count))]
    if last := packer.flush():
        batches.append(last)
    return batches


class BatchPacker:
    """`plan_batches` one text at a time, so requests can leave while later texts are still counted."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self._current: list[int] = []
        self._tokens = 0

    def add(self, index: int, count: int) -> list[int] | None:
        """Add a text; returns the request it closed, if adding it closed one."""
        limits = self.limits
        if count < 0 or count > limits.max_input_tokens:
            raise ValueError(f"token count {count} at index {index} is outside 0..{limits.max_input_tokens}")
        closed = None
        if self._current and (
            len(self._current) == limits.max_inputs or self._tokens + count > limits.max_request_tokens
        ):
            closed, self._current, self._tokens = self._current, [], 0
        self._current.append(index)
        self._tokens += count
        return closed

    def flush(self) -> list[int] | None:
        """The last, partly filled request, if any."""
        closed, self._current, self._tokens = self._current or None, [], 0
        return closed
