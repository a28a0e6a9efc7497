"""Signal Hub embeddings: the provider-independent core (no MCP here)."""

from providers.base import INPUT_TYPES, EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback, space_id
from providers.cost import CostEstimate, CostReport, Usage
from providers.errors import (
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
from providers.service.facade import EmbeddingService, SwitchResult
from providers.settings import Budget, InputLimits, Settings
from providers.storage.ledger import CostLedger

__all__ = [
    "INPUT_TYPES",
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
    "InputType",
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


def __getattr__(name: str) -> object:
    # OpenAI's price table is its provider module's, read from there only when asked for, so that
    # `import providers` imports no provider module (nor the SDK).
    if name == "PRICES_PER_MILLION_TOKENS":
        from providers.openai import OPENAI_PRICES

        return OPENAI_PRICES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
