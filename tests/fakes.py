"""A deterministic fake provider for testing the service and the MCP adapter (not provider behaviour)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from providers import EmbeddingProvider, EmbeddingResult, ProgressCallback


def fake_vector(text: str, dimensions: int) -> np.ndarray:
    """A unit vector that depends only on the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeProvider(EmbeddingProvider):
    """Deterministic vectors, one token per word; records the batches it was asked for."""

    def __init__(self, model: str = "fake-small", *, name: str = "fake", dimensions: int = 8) -> None:
        super().__init__(model)
        self.name = name
        self._dimensions = dimensions
        self.calls: list[list[str]] = []
        self.closed = False

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> EmbeddingResult:
        self.calls.append(list(texts))
        if progress is not None:
            await progress(len(texts), len(texts))
        return EmbeddingResult(
            vectors=np.stack([fake_vector(t, self._dimensions) for t in texts]),
            provider=self.name,
            model=self.model,
            tokens=sum(len(t.split()) for t in texts),
        )

    async def aclose(self) -> None:
        self.closed = True
