"""How counts and money read in what the tools and the CLI say: one place, so they all agree."""

from __future__ import annotations

import math

__all__ = ["count", "format_usd"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 text`, `2 texts`, `12,345 tokens`."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def format_usd(usd: float, *, places: int = 6) -> str:
    """Money with `places` decimals; never `$0.000000` beside an amount that is not zero.

    An amount too small for `places` gets two significant digits instead ($0.0000000036).
    """
    if usd == 0:
        return "$0.00"
    if abs(usd) < 10**-places:
        places = 1 - math.floor(math.log10(abs(usd)))
    return f"${usd:,.{places}f}"
