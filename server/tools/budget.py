"""Keeping each answer within what an agent can afford to read.

Claude Code and VS Code hand the model `JSON.stringify(structuredContent)` when a result has
structured content, else its text blocks. An answer listing many items is cut, whole items at a
time, to fit `ANSWER_TOKEN_BUDGET` cl100k tokens, and says what it left out: never a cut mid-JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from providers.text.tokens import Utf8ByteEstimate, default_tokenizer

__all__ = ["ANSWER_TOKEN_BUDGET", "answer_json", "answer_tokens", "fit_items", "shorten"]

ANSWER_TOKEN_BUDGET = 2_000
"""cl100k tokens one answer may take in a model's context."""


def answer_json(structured: dict[str, Any]) -> str:
    """The structured content as JavaScript's `JSON.stringify` writes it: compact, non-ASCII kept."""
    return json.dumps(structured, separators=(",", ":"), ensure_ascii=False)


def answer_tokens(text: str) -> int:
    """cl100k tokens of `text` (an upper bound if the tokenizer file is missing)."""
    return default_tokenizer().count(text)


def _fits(structured: dict[str, Any], budget: int) -> bool:
    text = answer_json(structured)
    # Every token covers at least one UTF-8 byte: a short answer fits without loading the tokenizer.
    return len(text.encode()) <= budget or answer_tokens(text) <= budget


def fit_items(build: Callable[[int], dict[str, Any]], total: int, budget: int = ANSWER_TOKEN_BUDGET) -> dict[str, Any]:
    """`build(k)` for the largest k <= total whose answer fits in `budget` tokens.

    `build(k)` shows the first k items and, when k < total, says how many more there are. Blocking
    (it may load the tokenizer): call it from a worker thread.
    """
    answer = build(total)
    if _fits(answer, budget):
        return answer
    low, high = 0, total - 1  # build(low) is assumed to fit: it shows nothing but the marker
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(build(middle), budget):
            low = middle
        else:
            high = middle - 1
    return build(low)


def shorten(message: str, budget: int = ANSWER_TOKEN_BUDGET // 2) -> str:
    """`message` cut at a line end to at most `budget` UTF-8 bytes (so tokens), saying how much was cut."""
    encoded = message.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= budget:
        return message
    kept = Utf8ByteEstimate().truncate(message, budget - 60)
    if "\n" in kept:
        kept = kept[: kept.rindex("\n")]
    return f"{kept}\n… ({len(message) - len(kept):,} more characters cut)"
