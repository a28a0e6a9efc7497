"""Signal Hub embeddings: the provider-independent core (no MCP here)."""

from .base import EmbeddingProvider, EmbeddingResult, ProgressCallback, space_id
from .cost import PRICES_PER_MILLION_TOKENS, CostEstimate, CostReport, Usage
from .errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    EmbeddingError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    ResponseTooLargeError,
)
from .ledger import CostLedger
from .service import EmbeddingService, SwitchResult
from .settings import Budget, InputLimits, Settings

__all__ = [
    "PRICES_PER_MILLION_TOKENS",
    "AuthenticationError",
    "Budget",
    "BudgetExceededError",
    "ConfigurationError",
    "CostEstimate",
    "CostLedger",
    "CostReport",
    "EmbeddingError",
    "EmbeddingProvider",
    "EmbeddingResult",
    "EmbeddingService",
    "InputError",
    "InputLimits",
    "ProgressCallback",
    "ProviderError",
    "ProviderUnavailableError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseTooLargeError",
    "Settings",
    "SwitchResult",
    "Usage",
    "space_id",
]
