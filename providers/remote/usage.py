"""How much usage a server may report for texts we counted ourselves, before it is not believed.

Tokenizers differ (a BERT vocabulary splits code finer than cl100k), but not by 4x: a server
reporting 100,000 tokens for a 4-token text is broken or lying, and a priced one would bill it.
What it reported is recorded (it is what will be billed), and the call stops there.
"""

from __future__ import annotations

from providers.errors import ProviderError

__all__ = ["check_usage", "plausible_tokens"]

_RATIO = 4
_PER_TEXT = 16
"""Tokens a server may add to each text (special tokens, a prompt template) beyond the ratio."""


def plausible_tokens(counted: int, texts: int) -> int:
    """The most tokens a server may report for `texts` texts we count as `counted` in all."""
    return _RATIO * counted + _PER_TEXT * texts


def check_usage(label: str, reported: int | None, counted: int, texts: int) -> None:
    """Raise `ProviderError` when `label` reported implausibly many tokens (None: it reported none)."""
    if reported is not None and reported > plausible_tokens(counted, texts):
        raise ProviderError(
            f"{label} reported {reported:,} tokens for {texts:,} texts we count as {counted:,}: not a plausible "
            "count. It is recorded as billed and nothing more is sent; check the server's usage reporting "
            "(and its price) before using it again."
        )
