"""`OpenAIOptions`: how the OpenAI provider packs, paces and retries.

Apart from `openai.py` so that settings can hold them without importing the `openai` SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .batching import OPENAI_LIMITS, OverlongPolicy, RequestLimits
from .errors import ConfigurationError

__all__ = ["OpenAIOptions"]


@dataclass(frozen=True, kw_only=True)
class OpenAIOptions:
    """How the OpenAI provider packs, paces and retries. Every field has a working default."""

    dimensions: int | None = None
    """Shorter vectors from the v3 models (None: the model's native length)."""
    limits: RequestLimits = OPENAI_LIMITS
    """The endpoint's request limits; lower them for compatible endpoints with smaller caps."""
    overlong: OverlongPolicy = "truncate"
    """A text over `limits.max_input_tokens`: "truncate" it (reported in `truncated`) or "error"."""
    request_tokens: int | None = None
    """Tokens packed into one request at most (None: a share of the TPM limit, see `_request_cap`)."""
    concurrency: int = 8
    """Requests in flight at once."""
    rpm: float | None = None
    """Requests per `rate_window`; None: learned from the x-ratelimit-limit-requests header."""
    tpm: float | None = None
    """Tokens per `rate_window`; None: learned from the x-ratelimit-limit-tokens header."""
    rate_window: float = 60.0
    """Seconds the rpm/tpm limits refer to (smaller only to compress time in tests and benchmarks)."""
    request_timeout: float = 60.0
    """Seconds one request may take before it is abandoned and retried."""
    max_attempts: int = 6
    """Attempts per request, the first included."""
    max_retry_seconds: float = 120.0
    """Seconds a request may spend retrying before its failure is final."""
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    finish_in_flight: float = 2.0
    """Seconds the requests already sent may go on after another request of the call failed for
    good, so that what they return (and cost) is kept; nothing new is sent meanwhile."""
    encoding_format: Literal["base64", "float"] = "base64"
    """Wire format of the vectors; base64 is 4x smaller. Use "float" for endpoints without base64."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ConfigurationError("OpenAI concurrency and max_attempts must be at least 1.")
        if min(self.request_timeout, self.rate_window, self.backoff_initial, self.backoff_max) <= 0:
            raise ConfigurationError("OpenAI timeouts, rate window and backoff must be positive.")
        if self.finish_in_flight < 0:
            raise ConfigurationError("OpenAI finish_in_flight must be zero or more seconds.")
        if (self.rpm is not None and self.rpm <= 0) or (self.tpm is not None and self.tpm <= 0):
            raise ConfigurationError("SIGNAL_HUB_OPENAI_RPM and SIGNAL_HUB_OPENAI_TPM must be positive when set.")
        if self.overlong not in ("truncate", "error"):
            raise ConfigurationError(f"the over-long policy {self.overlong!r} is not 'truncate' or 'error'.")
        if self.request_tokens is not None and self.request_tokens < self.limits.max_input_tokens:
            raise ConfigurationError(
                f"request_tokens ({self.request_tokens}) must hold at least one full input "
                f"({self.limits.max_input_tokens} tokens)."
            )
