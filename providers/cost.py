"""Prices and the running cost of a session, computed from the usage providers report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.settings import Settings

__all__ = ["CostEstimate", "CostReport", "Usage", "cost_usd", "price_per_million"]


def price_per_million(
    provider: str, model: str, settings: Settings | Mapping[str, float] | None = None
) -> float | None:
    """USD per 1M tokens, or None when the price is unknown (never silently zero).

    `SIGNAL_HUB_PRICES` (settings.prices, or a mapping of such overrides) comes first, then the
    price the provider declares in the registry.
    """
    from providers.registry import provider_spec
    from providers.settings import Settings

    if not isinstance(settings, Settings):
        settings = Settings(prices=dict(settings or {}))
    if model in settings.prices:
        return settings.prices[model]
    spec = provider_spec(provider)
    return None if spec is None else spec.price(settings, model)


def cost_usd(provider: str, model: str, tokens: int, settings: Settings | None = None) -> float | None:
    """What `tokens` of `model` cost: the one place a cost is worked out."""
    price = price_per_million(provider, model, settings)
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
    estimated_tokens: int = 0
    """Tokens counted by us because the server reported no usage (included in `tokens`)."""

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
    batch_usd: float | None = None
    """Through the OpenAI Batch API (half price); None for other providers."""


@dataclass
class CostReport:
    total_usd: float
    total: Usage
    by_provider: dict[str, Usage] = field(default_factory=dict)
    by_model: dict[str, Usage] = field(default_factory=dict)
    by_client: dict[str, Usage] = field(default_factory=dict)
    """By the client that made the calls (HTTP token names; `clients.NO_CLIENT` for the others)."""


# Batch API prices (issue 16): kept apart so the price table can move without touching them.

BATCH_API_DISCOUNT = 0.5
"""The OpenAI Batch API bills half the synchronous price."""


def batch_price_per_million(provider: str, model: str, overrides: Mapping[str, float] | None = None) -> float | None:
    """USD per 1M tokens through the Batch API: an override named `<model>@batch`, else half the price."""
    if overrides and f"{model}@batch" in overrides:
        return overrides[f"{model}@batch"]
    price = overrides[model] if overrides and model in overrides else price_per_million(provider, model)
    return None if price is None else price * BATCH_API_DISCOUNT


def batch_cost_usd(provider: str, model: str, tokens: int, settings: Settings | None = None) -> float | None:
    """What `tokens` cost through the OpenAI Batch API; None for other providers or an unknown price."""
    if provider != "openai":
        return None
    price = batch_price_per_million(provider, model, settings.prices if settings is not None else None)
    return None if price is None else tokens * price / 1_000_000
