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

from providers.errors import InputError
from providers.text.validation import positions

__all__ = [
    "OPENAI_LIMITS",
    "BatchPacker",
    "OverlongPolicy",
    "RequestLimits",
    "overlong_items",
    "plan_batches",
    "request_cap",
]

OverlongPolicy = Literal["truncate", "error"]
"""What to do with a text over `max_input_tokens`: cut it to fit (and report it) or refuse the call."""


@dataclass(frozen=True, kw_only=True)
class RequestLimits:
    """What one embeddings request may hold: a per-endpoint profile."""

    max_inputs: int = 2048
    """Texts per request."""
    max_input_tokens: int = 8192
    """Tokens in one text."""
    max_request_tokens: int = 300_000
    """Tokens summed over a request's texts."""
    max_request_bytes: int | None = None
    """UTF-8 bytes summed over a request's texts (None: no such limit), for servers that cap the payload."""

    def __post_init__(self) -> None:
        if min(self.max_inputs, self.max_input_tokens, self.max_request_tokens) < 1:
            raise ValueError(f"every request limit must be positive: {self}")
        if self.max_input_tokens > self.max_request_tokens:
            raise ValueError(f"max_input_tokens cannot exceed max_request_tokens: {self}")
        if self.max_request_bytes is not None and self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be positive: {self}")


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
        raise InputError(
            f"text longer than {limits.max_input_tokens:,} tokens at {positions(list(over))}: "
            "split it into smaller chunks, or let the provider truncate over-long texts."
        )
    return over


def plan_batches(
    token_counts: Sequence[int], limits: RequestLimits, sizes: Sequence[int] | None = None
) -> list[list[int]]:
    """Group text indexes into requests, in input order, each within every limit.

    Every count must already be within `max_input_tokens` (cut over-long texts first); `sizes`
    are the texts' bytes, needed only under `max_request_bytes`.
    """
    packer = BatchPacker(limits)
    sizes = sizes or [0] * len(token_counts)
    batches = [
        batch
        for index, (count, size) in enumerate(zip(token_counts, sizes, strict=True))
        if (batch := packer.add(index, count, size))
    ]
    if last := packer.flush():
        batches.append(last)
    return batches


class BatchPacker:
    """`plan_batches` one text at a time, so requests can leave while later texts are still counted."""

    def __init__(self, limits: RequestLimits, cap: int | None = None) -> None:
        self.limits = limits
        self.cap = cap
        """Tokens after which a request closes, below the endpoint's limit (a longer text goes alone)."""
        self._current: list[int] = []
        self._tokens = 0
        self._bytes = 0

    def add(self, index: int, count: int, size: int = 0) -> list[int] | None:
        """Add a text of `count` tokens and `size` bytes; returns the request it closed, if it closed one.

        A text larger than `max_request_bytes` on its own still gets a request of its own.
        """
        limits = self.limits
        if count < 0 or count > limits.max_input_tokens:
            raise ValueError(f"token count {count} at index {index} is outside 0..{limits.max_input_tokens}")
        too_big = limits.max_request_bytes is not None and self._bytes + size > limits.max_request_bytes
        most = limits.max_request_tokens if self.cap is None else min(self.cap, limits.max_request_tokens)
        closed = None
        if self._current and (len(self._current) == limits.max_inputs or self._tokens + count > most or too_big):
            closed, self._current, self._tokens, self._bytes = self._current, [], 0, 0
        self._current.append(index)
        self._tokens += count
        self._bytes += size
        return closed

    def flush(self) -> list[int] | None:
        """The last, partly filled request, if any."""
        closed, self._current, self._tokens, self._bytes = self._current or None, [], 0, 0
        return closed


# Under a TPM limit, a request holds at most this share of a minute's tokens, and at most this
# many tokens under any limit or none (an endpoint may report "unlimited" as a big number).
_REQUESTS_PER_TPM = 32
_MID_SIZED_TOKENS = 32_768
# A request under a TPM limit holds at least this many tokens (a longer text still goes alone).
_MIN_REQUEST_TOKENS = 256


def request_cap(limits: RequestLimits, configured: int | None, tpm: float | None, ratio: float) -> int:
    """Tokens per request: the endpoint's limit (or the `configured` one), and under a TPM limit a small share of it.

    Many mid-sized requests beat a few huge ones under a TPM limit: the burst an idle bucket
    allows is spread over several round trips, so the limiter learns how the API counts
    before the bucket runs low; a request the API counts higher than estimated overshoots
    by less; and the last request, which the whole call waits for, is short. `ratio` is the
    API's count per estimated token: where it counts more than we do, leave it room for that.
    """
    cap = configured or limits.max_request_tokens
    if configured is None:
        cap = min(cap, _MID_SIZED_TOKENS, int(tpm / _REQUESTS_PER_TPM) if tpm is not None else cap)
    # A text longer than the cap still goes, alone: the cap need not hold a full input.
    floor = min(_MIN_REQUEST_TOKENS, limits.max_input_tokens)
    return max(floor, int(min(cap, limits.max_request_tokens) / max(1.0, ratio)))
