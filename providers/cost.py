"""Prices and the running cost of a session, computed from the usage providers report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PRICES_PER_MILLION_TOKENS", "CostEstimate", "CostReport", "Usage", "cost_usd", "price_per_million"]

PRICES_PER_MILLION_TOKENS: Mapping[str, float] = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
"""USD per 1M input tokens for paid models; local models cost nothing."""

FREE_PROVIDERS = frozenset({"local"})


def price_per_million(provider: str, model: str, overrides: Mapping[str, float] | None = None) -> float | None:
    """USD per 1M tokens, or None when the price is unknown (never silently zero)."""
    if overrides and model in overrides:
        return overrides[model]
    if provider in FREE_PROVIDERS:
        return 0.0
    return PRICES_PER_MILLION_TOKENS.get(model)


def cost_usd(provider: str, model: str, tokens: int, overrides: Mapping[str, float] | None = None) -> float | None:
    price = price_per_million(provider, model, overrides)
    return None if price is None else tokens * price / 1_000_000


@dataclass
class Usage:
    """What some slice of the work consumed."""

    tokens: int = 0
    requests: int = 0
    embeddings: int = 0
    usd: float = 0.0
    unpriced_tokens: int = 0
    """Tokens of models whose price is unknown: their cost is not in `usd`."""
    cached: int = 0
    """Embeddings served from the cache, at no cost."""
    saved_usd: float = 0.0
    """What the cached embeddings would have cost."""

    def merge(self, other: Usage) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class CostEstimate:
    """What a job would cost, worked out without calling the provider."""

    provider: str
    model: str
    texts: int
    tokens: int
    usd: float | None
    """None when the model's price is unknown."""


@dataclass
class CostReport:
    total_usd: float
    total: Usage
    by_provider: dict[str, Usage] = field(default_factory=dict)
    by_model: dict[str, Usage] = field(default_factory=dict)


# Batch API prices (issue 16): kept apart so the price table can move without touching them.

BATCH_API_DISCOUNT = 0.5
"""The OpenAI Batch API bills half the synchronous price."""


def batch_price_per_million(provider: str, model: str, overrides: Mapping[str, float] | None = None) -> float | None:
    """USD per 1M tokens through the Batch API: an override named `<model>@batch`, else half the price."""
    if overrides and f"{model}@batch" in overrides:
        return overrides[f"{model}@batch"]
    price = overrides[model] if overrides and model in overrides else price_per_million(provider, model)
    return None if price is None else price * BATCH_API_DISCOUNT
