"""Checks on the texts of a call, made before any provider sees them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from providers.errors import InputError

if TYPE_CHECKING:  # settings import batching, which names positions with this module
    from providers.settings import InputLimits

__all__ = ["blank_positions", "positions", "reject_blank", "validate_texts"]

_MAX_POSITIONS_NAMED = 10


def validate_texts(texts: object, limits: InputLimits) -> list[str]:
    """Return `texts` as a list of strings, or raise `InputError` naming every bad position."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError("texts must be a list of strings; to embed one string use generate()/embed_text.")
    if not texts:
        raise InputError("texts is empty: pass at least one non-empty string.")
    if len(texts) > limits.max_texts:
        raise InputError(
            f"{len(texts)} texts in one call; the limit is {limits.max_texts}. "
            f"Split them into calls of at most {limits.max_texts} texts."
        )
    not_strings = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if not_strings:
        kinds = ", ".join(f"texts[{i}] is {type(texts[i]).__name__}" for i in not_strings[:_MAX_POSITIONS_NAMED])
        raise InputError(f"every item must be a string: {kinds}{_more(not_strings)}.")
    blank = blank_positions(texts)
    if blank:
        raise InputError(
            f"empty or whitespace-only text at {positions(blank)}: remove those items or give them content."
        )
    too_long = [i for i, text in enumerate(texts) if len(text) > limits.max_text_chars]
    if too_long:
        raise InputError(
            f"text longer than {limits.max_text_chars:,} characters at {positions(too_long)}: "
            "split it into smaller chunks."
        )
    total = sum(len(text) for text in texts)
    if total > limits.max_total_chars:
        raise InputError(
            f"{total:,} characters in one call; the limit is {limits.max_total_chars:,}. "
            "Split the texts over several calls."
        )
    return list(texts)  # every item was checked to be a str


def blank_positions(texts: Sequence[object]) -> list[int]:
    """The one rule for blank texts: not a string, or nothing but whitespace."""
    return [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]


def positions(indexes: Sequence[int]) -> str:
    """Name bad positions for a message: "position 3", "positions 0, 4, 9 and 12 more"."""
    indexes = list(indexes)
    named = ", ".join(str(i) for i in indexes[:_MAX_POSITIONS_NAMED])
    return f"position{'s' if len(indexes) > 1 else ''} {named}{_more(indexes)}"


def _more(indexes: list[int]) -> str:
    hidden = len(indexes) - _MAX_POSITIONS_NAMED
    return f" and {hidden} more" if hidden > 0 else ""


def reject_blank(texts: Sequence[str], *, after: str | None = None) -> None:
    """Refuse empty or whitespace-only texts (`after` a step that made them so), naming their positions."""
    blank = blank_positions(texts)
    if blank:
        when = f" after {after}" if after else ""
        raise InputError(
            f"empty or whitespace-only text{when} at {positions(blank)}: "
            "remove those items or give them content; nothing was sent."
        )
