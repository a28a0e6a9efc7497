"""Errors raised by the embedding core.

Every error is an `EmbeddingError`, and every message says what happened and what to do:

    EmbeddingError
    ├── ConfigurationError        bad settings: unknown provider or model, missing key
    ├── InputError                bad texts: empty, not a string, too many, too long
    ├── ResponseTooLargeError     the answer would not fit in one message
    ├── BudgetExceededError       the hard spending limit would be passed
    ├── StorageError              a database of the data directory failed: a full disk, a lock held too long
    └── ProviderError             the provider failed to embed
        ├── AuthenticationError   the provider rejected the credentials
        ├── QuotaExceededError    the account has no credit left (retrying cannot help)
        ├── RateLimitError        still rate limited after every retry
        └── ProviderUnavailableError  timeouts, dropped connections and 5xx after every retry

A message is made safe when the error is made (`redaction.safe_message`): whatever a provider's
answer put in it, no key survives and it stays short enough for an answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.redaction import safe_message

if TYPE_CHECKING:
    from providers.base import EmbeddingResult

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigurationError",
    "EmbeddingError",
    "InputError",
    "ProviderError",
    "ProviderUnavailableError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseTooLargeError",
    "StorageError",
]


class EmbeddingError(Exception):
    """Base class of every error the embedding core raises."""

    def __init__(self, *args: object) -> None:
        # The one place every message passes: keys redacted, a provider's long answer cut.
        super().__init__(*(safe_message(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigurationError(EmbeddingError):
    """A setting is wrong: an unknown provider or model, a missing API key."""


class InputError(EmbeddingError):
    """The texts to embed are not acceptable; nothing was sent to a provider."""


class ResponseTooLargeError(EmbeddingError):
    """The answer would exceed the size one message may have."""


class BudgetExceededError(EmbeddingError):
    """Embedding these texts would pass the hard spending limit."""


class StorageError(EmbeddingError):
    """The ledger, the cache or the job store could not be read or written (see `storage.sqlite`)."""


class ProviderError(EmbeddingError):
    """The provider failed to embed the texts.

    `partial` holds what it did embed (and was paid for) before failing: the vectors of the texts
    at `partial_indexes`, so they can be kept for later instead of thrown away.
    """

    def __init__(
        self, message: str, *, partial: EmbeddingResult | None = None, partial_indexes: tuple[int, ...] = ()
    ) -> None:
        super().__init__(message)
        self.partial = partial
        self.partial_indexes = partial_indexes


class AuthenticationError(ProviderError):
    """The provider rejected the credentials."""


class QuotaExceededError(ProviderError):
    """The provider account has no credit left; retrying cannot help."""


class RateLimitError(ProviderError):
    """The provider kept answering 'rate limited' after every retry."""


class ProviderUnavailableError(ProviderError):
    """The provider could not be reached or kept failing after every retry."""
