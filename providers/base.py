"""The provider interface: one async method that embeds a list of texts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "INPUT_TYPES",
    "EmbeddingProvider",
    "EmbeddingResult",
    "InputType",
    "ProgressCallback",
    "RequestHook",
    "input_type_of",
    "space_id",
]

InputType = Literal["document", "query"]
"""What a text is for: `document` (stored and searched, the default) or `query` (what a search looks for).
Asymmetric models embed the two differently; a provider with no such notion ignores it."""
INPUT_TYPES: tuple[InputType, ...] = get_args(InputType)

ProgressCallback = Callable[[int, int], Awaitable[None]]
"""Called as `await progress(done, total)` while a provider works through a call."""


def space_id(
    provider: str,
    model: str,
    dimensions: int,
    normalized: bool,
    endpoint: str | None = None,
    qualifiers: Sequence[str] = (),
) -> str:
    """Name the vector space a result lives in; vectors from different spaces must never mix.

    `endpoint` (host[:port]) is part of it for providers whose model names mean nothing alone;
    `qualifiers` name whatever else changes the vectors (the input type, a long-text mode), in order.
    """
    where = f"{endpoint}/" if endpoint else ""
    tail = "".join(f":{part}" for part in qualifiers)
    return f"{provider}:{where}{model}:{dimensions}:{'l2' if normalized else 'raw'}{tail}"


def input_type_of(space: str) -> InputType:
    """The input type a space's vectors were made for: "query" only where the space says so (see `space_id`)."""
    return "query" if space.rsplit(":", 1)[-1].split("~")[0] == "query" else "document"


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors for a list of texts, in input order, and what it took to make them."""

    vectors: npt.NDArray[np.float32]
    """Shape (len(texts), dimensions), float32."""
    provider: str
    model: str
    tokens: int
    """Input tokens as the provider counted (and, for a paid API, billed) them."""
    tokens_estimated: bool = False
    """True when the provider reported no usage, so `tokens` is our own count."""
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
    endpoint: str | None = None
    """host[:port] of the server, for providers whose space names it (see `space_id`)."""
    qualifiers: tuple[str, ...] = ()
    """What else names the space: the input type where it changed the vectors, say (see `space_id`)."""

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
        return space_id(self.provider, self.model, self.dimensions, self.normalized, self.endpoint, self.qualifiers)


RequestHook = Callable[[list[int], EmbeddingResult], Awaitable[None]]
"""Called as `await on_request(indexes, piece)` when one billed request of a call completes:
`piece` holds the vectors (and usage) of the texts at `indexes`, so they can be kept at once."""


class EmbeddingProvider(ABC):
    """Turns texts into vectors. Subclasses set `name` and implement `embed`."""

    name: str
    """Provider name used in configuration and results, e.g. "local" or "openai"."""
    normalized: bool = True
    """Whether vectors come back with unit length."""
    endpoint: str | None = None
    """host[:port] when the space names the server (see `space_id`)."""
    input_types: bool = False
    """Whether `input_type` changes the vectors; False: the provider ignores it (and its space does not name it)."""

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Length of the vectors this provider returns, known without embedding anything."""

    @property
    def space(self) -> str:
        """The vector space of this provider's document vectors; part of every cache key."""
        return self.space_for("document")

    def space_for(self, input_type: InputType) -> str:
        """The vector space of this provider's vectors of `input_type`; part of every cache key."""
        return space_id(
            self.name, self.model, self.dimensions, self.normalized, self.endpoint, self.space_qualifiers(input_type)
        )

    def space_qualifiers(self, input_type: InputType) -> tuple[str, ...]:
        """What names the space beyond provider, model, length and normalisation; results carry the same.

        The input type, for a provider whose vectors depend on it; providers add what else changes them.
        """
        return (input_type,) if self.input_types else ()

    @abstractmethod
    async def embed(
        self, texts: Sequence[str], *, input_type: InputType = "document", progress: ProgressCallback | None = None
    ) -> EmbeddingResult:
        """Embed already-validated, non-empty texts as `input_type`; return their vectors in input order."""

    async def resolve_space(self) -> None:  # noqa: B027 - optional hook, most providers know their space
        """Make `space` final before the cache is read: a provider that learns its vector length asks once."""

    async def embed_each(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        progress: ProgressCallback | None = None,
        on_request: RequestHook | None = None,
    ) -> EmbeddingResult:
        """`embed`, and providers that bill per request also `await on_request(...)` as each completes.

        The default reports nothing: the whole result is the only piece.
        """
        return await self.embed(texts, input_type=input_type, progress=progress)

    def check(self) -> None:
        """Raise `ConfigurationError` if this provider cannot work as configured: cheap, calls nothing out."""
        _ = self.space

    async def estimate_tokens(self, texts: Sequence[str]) -> int:
        """Tokens `texts` will cost, without calling anything; errs high rather than low."""
        # About 3 bytes of UTF-8 per token for code and prose; providers with a tokenizer do better.
        return sum(len(text.encode()) // 3 + 1 for text in texts)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release clients, threads or models the provider holds."""
