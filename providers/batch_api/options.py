"""`BatchApiOptions`: how the Batch API engine packs, polls and retries. Every field has a working default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from providers.batch_api.packing import BATCH_API_LIMITS, BatchLimits
from providers.errors import ConfigurationError
from providers.remote.batching import OverlongPolicy

__all__ = ["BatchApiOptions"]

_NATIVE = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})


@dataclass(frozen=True, kw_only=True)
class BatchApiOptions:
    limits: BatchLimits = BATCH_API_LIMITS
    """What a file (a batch) and each request in it may hold."""
    dimensions: int | None = None
    """Shorter vectors from the v3 models (None: the model's native length)."""
    overlong: OverlongPolicy = "truncate"
    """A text over the per-input token limit: "truncate" it, or "error" before anything is sent."""
    encoding_format: Literal["base64", "float"] = "base64"
    """base64 makes output files 4x smaller."""
    completion_window: str = "24h"
    poll_initial: float = 10.0
    """Seconds between polls while batches change; doubled while they do not, up to `poll_max`."""
    poll_max: float = 300.0
    poll_failures: int = 20
    """Failed polls in a row (5xx, timeouts) before the run gives up; the batches keep running remotely."""
    max_tries: int = 3
    """Batches a request may go in, the first included: retryable failures and expiries are sent again."""
    renew_reservation_s: float = 1800.0
    """Seconds after which a running batch's budget reservation is renewed: the ledger forgets one
    after an hour, and a batch may run for a day."""

    def __post_init__(self) -> None:
        if min(self.poll_initial, self.poll_max) <= 0 or self.poll_failures < 1 or self.max_tries < 1:
            raise ConfigurationError("Batch API poll intervals must be positive, poll_failures and max_tries >= 1.")

    def resolved_dimensions(self, model: str) -> int:
        """The vector length the engine asks `model` for, checked like the synchronous provider does."""
        if model not in _NATIVE:
            raise ConfigurationError(f"unknown OpenAI model {model!r}; choose one of: {', '.join(_NATIVE)}.")
        native = _NATIVE[model]
        wanted = self.dimensions
        if wanted is None or wanted == native:
            return native
        if model not in _SHORTENABLE or not 1 <= wanted <= native:
            raise ConfigurationError(f"{model} cannot make {wanted}-dimension vectors (native {native}).")
        return wanted

    def dimensions_param(self, model: str) -> int | None:
        """The `dimensions` request parameter: sent only to the models that take it."""
        return self.dimensions if self.dimensions is not None and model in _SHORTENABLE else None
