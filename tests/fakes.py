"""A deterministic fake provider for testing the service and the MCP adapter (not provider behaviour)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from providers import EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback


def fake_vector(text: str, dimensions: int) -> np.ndarray:
    """A unit vector that depends only on the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeProvider(EmbeddingProvider):
    """Deterministic vectors, one token per word; records the batches it was asked for.

    With `input_types=True` a query's vector is that of the text with "query: " before it.
    """

    def __init__(
        self, model: str = "fake-small", *, name: str = "fake", dimensions: int = 8, input_types: bool = False
    ) -> None:
        super().__init__(model)
        self.name = name
        self._dimensions = dimensions
        self.input_types = input_types
        self.calls: list[list[str]] = []
        self.types: list[InputType] = []
        """The input type of each call."""
        self.closed = False

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(
        self, texts: Sequence[str], *, input_type: InputType = "document", progress: ProgressCallback | None = None
    ) -> EmbeddingResult:
        self.calls.append(list(texts))
        self.types.append(input_type)
        if progress is not None:
            await progress(len(texts), len(texts))
        prefix = "query: " if self.input_types and input_type == "query" else ""
        return EmbeddingResult(
            vectors=np.stack([fake_vector(prefix + t, self._dimensions) for t in texts]),
            provider=self.name,
            model=self.model,
            tokens=sum(len(t.split()) for t in texts),
            qualifiers=self.space_qualifiers(input_type),
        )

    async def aclose(self) -> None:
        self.closed = True
