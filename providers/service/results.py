"""What `EmbeddingService`'s methods answer besides plain embeddings."""

from __future__ import annotations

from dataclasses import dataclass

from providers.base import EmbeddingResult
from providers.service.similarity import Duplicates, Ranked

__all__ = ["DuplicateTexts", "ProviderStatus", "RankedTexts", "SpendTotals", "SwitchResult"]


@dataclass(frozen=True)
class SwitchResult:
    """The provider before and after a switch, with their vector spaces."""

    provider: str
    model: str
    dimensions: int
    space: str
    previous_provider: str
    previous_model: str
    previous_dimensions: int
    previous_space: str


@dataclass(frozen=True)
class ProviderStatus:
    """What `list_providers` shows of one provider: never a secret."""

    name: str
    model: str | None
    dimensions: int | None
    space: str | None
    active: bool
    circuit: str
    last_error: str | None
    retry_in_s: float
    input_types: bool | None = None
    """Whether `input_type` changes its vectors (False: it ignores it); None when it cannot be built."""


@dataclass(frozen=True)
class RankedTexts:
    """`rank_texts`' answer: the best candidates first, and the embedding call that scored them."""

    results: list[Ranked]
    embedding: EmbeddingResult
    """Accounting of the one call that embedded the query (row 0) and the candidates: space, cost, cache, fallback."""


@dataclass(frozen=True)
class DuplicateTexts:
    """`find_duplicates`' answer: groups of near-copies, and the embedding call behind them."""

    duplicates: Duplicates
    embedding: EmbeddingResult


@dataclass(frozen=True)
class SpendTotals:
    """USD spent in this session, in the budget period (named), and of all time."""

    session_usd: float
    period: str
    period_usd: float
    all_time_usd: float
