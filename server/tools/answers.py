"""How tool answers are shaped: the data as structured content, a one-line summary as text."""

from __future__ import annotations

from typing import Any

from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel

from providers import EmbeddingResult
from server.tools.encoding import Encoding
from server.wording import count, format_usd

__all__ = ["answer", "call_meta", "dump", "embedding_meta", "summary"]


def embedding_meta(result: EmbeddingResult, encoding: Encoding) -> dict[str, Any]:
    return {
        "dimensions": result.dimensions,
        "provider": result.provider,
        "model": result.model,
        "space": result.space,
        "tokens": result.tokens,
        "tokens_estimated": result.tokens_estimated,
        "cost_usd": result.cost_usd,
        "encoding": encoding,
        "cached": result.cached,
        "fallback": result.fallback,
        "fallback_reason": result.fallback_reason,
        "requested_space": result.requested_space,
        "warning": result.warning,
    }


def call_meta(result: EmbeddingResult) -> dict[str, Any]:
    return {
        "space": result.space,
        "tokens": result.tokens,
        "cost_usd": result.cost_usd,
        "cached": result.cached,
        "fallback": result.fallback,
        "fallback_reason": result.fallback_reason,
        "warning": result.warning,
    }


def summary(result: EmbeddingResult, what: str) -> str:
    cost = "price unknown" if result.cost_usd is None else format_usd(result.cost_usd)
    text = (
        f"Embedded {what} with {result.provider}/{result.model}: {result.dimensions} dimensions, "
        f"{count(result.tokens, 'token')}, {cost}."
    )
    if result.cached:
        text += f" {result.cached:,} from the cache."
    if result.fallback:
        text += (
            f" FALLBACK: {result.fallback_reason}; these vectors are in space {result.space},"
            f" not {result.requested_space}."
        )
    if result.truncated:
        cut = len(result.truncated)
        text += f" {count(cut, 'text')} {'was' if cut == 1 else 'were'} longer than the model's window and truncated."
    if result.warning:
        text += f" Warning: {result.warning}"
    return text


def dump(out: BaseModel, *, lean: bool = False) -> dict[str, Any]:
    """An answer as JSON values; `lean` leaves out optional fields left at their default (none is required)."""
    return out.model_dump(mode="json", exclude_defaults=lean)


def answer(structured: dict[str, Any], text: str) -> CallToolResult:
    """A one-line summary as text; the data in structured content, which agents' hosts hand the model."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
