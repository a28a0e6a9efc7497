"""The provider interface: one async method that embeds a list of texts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["EmbeddingProvider", "EmbeddingResult", "ProgressCallback", "space_id"]

ProgressCallback = Callable[[int, int], Awaitable[None]]
"""Called as `await progress(done, total)` while a provider works through a call."""


def space_id(provider: str, model: str, dimensions: int, normalized: bool) -> str:
    """Name the vector space a result lives in; vectors from different spaces must never mix."""
    return f"{provider}:{model}:{dimensions}:{'l2' if normalized else 'raw'}"


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors for a list of texts, in input order, and what it took to make them."""

    vectors: npt.NDArray[np.float32]
    """Shape (len(texts), dimensions), float32."""
    provider: str
    model: str
    tokens: int
    """Input tokens as the provider counted (and, for a paid API, billed) them."""
    requests: int = 1
    """How many provider requests (or local model calls) the result took."""
    normalized: bool = True
    truncated: Mapping[int, int] = field(default_factory=dict)
    """Index of each text that was cut to fit the model → how many tokens were dropped."""
    cost_usd: float | None = 0.0
    """None when the model's price is unknown."""
    warning: str | None = None
    """Something the caller should know, e.g. the soft spending limit was passed."""
    cached: int = 0
    """Texts answered from the cache: no provider call, no cost."""
    duplicates: int = 0
    """Texts that repeated an earlier text of the same call and were embedded once."""
    fallback_reason: str | None = None
    """Set when another provider than the one asked for answered, and why."""
    requested_space: str | None = None
    """With a fallback: the space of the provider that was asked for (its vectors would not mix)."""

    @property
    def fallback(self) -> bool:
        return self.fallback_reason is not None

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def space(self) -> str:
        return space_id(self.provider, self.model, self.dimensions, self.normalized)


class EmbeddingProvider(ABC):
    """Turns texts into vectors. Subclasses set `name` and implement `embed`."""

    name: str
    """Provider name used in configuration and results, e.g. "local" or "openai"."""
    normalized: bool = True
    """Whether vectors come back with unit length."""

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Length of the vectors this provider returns, known without embedding anything."""

    @property
    def space(self) -> str:
        """The vector space of this provider's results; part of every cache key."""
        return space_id(self.name, self.model, self.dimensions, self.normalized)

    @abstractmethod
    async def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> EmbeddingResult:
        """Embed already-validated, non-empty texts and return their vectors in input order."""

    def check(self) -> None:
        """Raise `ConfigurationError` if this provider cannot work as configured: cheap, calls nothing out."""
        _ = self.space

    async def estimate_tokens(self, texts: Sequence[str]) -> int:
        """Tokens `texts` will cost, without calling anything; errs high rather than low."""
        # About 3 bytes of UTF-8 per token for code and prose; providers with a tokenizer do better.
        return sum(len(text.encode()) // 3 + 1 for text in texts)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release clients, threads or models the provider holds."""
