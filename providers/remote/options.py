"""`RemoteOptions`: how the remote-request engine packs, paces and retries one HTTP provider's requests.

Apart from `remote.py` so that settings can hold them without importing anyio or an SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from providers.env import POSITIVE_INT, choice, number, optional, positive
from providers.errors import ConfigurationError
from providers.remote.batching import OPENAI_LIMITS, OverlongPolicy, RequestLimits

__all__ = ["RemoteOptions", "remote_fields_from_env"]


@dataclass(frozen=True, kw_only=True)
class RemoteOptions:
    """How a remote provider packs, paces and retries. Every field has a working default."""

    limits: RequestLimits = OPENAI_LIMITS
    """The endpoint's request limits; lower them for endpoints with smaller caps."""
    overlong: OverlongPolicy = "truncate"
    """A text over `limits.max_input_tokens`: "truncate" it (reported in `truncated`) or "error"."""
    request_tokens: int | None = None
    """Tokens packed into one request at most (None: a share of the TPM limit, see `RemoteProvider`)."""
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
    refused_attempts: int = 2
    """Attempts per request while the endpoint refuses connections: nothing listens, so it is an outage."""
    timeout_attempts: int = 6
    """Attempts per request that time out (the provider says which failures are timeouts)."""
    max_retry_seconds: float = 120.0
    """Seconds a request may spend retrying before its failure is final."""
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    finish_in_flight: float = 2.0
    """Seconds the requests already sent may go on after another request of the call failed for
    good, so that what they return (and cost) is kept; nothing new is sent meanwhile."""

    def __post_init__(self) -> None:
        if min(self.concurrency, self.max_attempts, self.refused_attempts, self.timeout_attempts) < 1:
            raise ConfigurationError("concurrency and the attempts per request must be at least 1.")
        if min(self.request_timeout, self.rate_window, self.backoff_initial, self.backoff_max) <= 0:
            raise ConfigurationError("timeouts, the rate window and backoff must be positive.")
        if self.finish_in_flight < 0:
            raise ConfigurationError("finish_in_flight must be zero or more seconds.")
        if (self.rpm is not None and self.rpm <= 0) or (self.tpm is not None and self.tpm <= 0):
            raise ConfigurationError("the RPM and TPM limits must be positive when set.")
        if self.overlong not in ("truncate", "error"):
            raise ConfigurationError(f"the over-long policy {self.overlong!r} is not 'truncate' or 'error'.")
        if self.request_tokens is not None and self.request_tokens < self.limits.max_input_tokens:
            raise ConfigurationError(
                f"request_tokens ({self.request_tokens}) must hold at least one full input "
                f"({self.limits.max_input_tokens} tokens)."
            )


def remote_fields_from_env(env: Mapping[str, str], prefix: str, default: RemoteOptions) -> dict[str, Any]:
    """The engine's fields from `<prefix>_*` variables (e.g. SIGNAL_HUB_OPENAI_TPM), as keyword arguments."""
    return {
        "rpm": optional(env, f"{prefix}_RPM", float, positive("requests per minute")),
        "tpm": optional(env, f"{prefix}_TPM", float, positive("tokens per minute")),
        "concurrency": number(env, f"{prefix}_CONCURRENCY", int, POSITIVE_INT, default.concurrency),
        "request_timeout": number(env, f"{prefix}_TIMEOUT_S", float, positive("seconds"), default.request_timeout),
        "max_attempts": number(env, f"{prefix}_MAX_ATTEMPTS", int, POSITIVE_INT, default.max_attempts),
        "max_retry_seconds": number(
            env, f"{prefix}_MAX_RETRY_S", float, positive("seconds"), default.max_retry_seconds
        ),
        "overlong": choice(env, f"{prefix}_OVERLONG", get_args(OverlongPolicy), default.overlong),
        "limits": _request_limits(env, prefix, default.limits),
    }


def _request_limits(env: Mapping[str, str], prefix: str, default: RequestLimits) -> RequestLimits:
    input_tokens = number(env, f"{prefix}_MAX_INPUT_TOKENS", int, POSITIVE_INT, default.max_input_tokens)
    request_tokens = number(env, f"{prefix}_MAX_REQUEST_TOKENS", int, POSITIVE_INT, default.max_request_tokens)
    if input_tokens > request_tokens:
        raise ConfigurationError(
            f"{prefix}_MAX_INPUT_TOKENS ({input_tokens}) cannot exceed {prefix}_MAX_REQUEST_TOKENS "
            f"({request_tokens}): one text must fit in one request. Set {prefix}_MAX_INPUT_TOKENS to at most "
            f"{request_tokens}."
        )
    request_bytes = optional(env, f"{prefix}_MAX_REQUEST_BYTES", int, POSITIVE_INT)
    return RequestLimits(
        max_inputs=number(env, f"{prefix}_MAX_INPUTS", int, POSITIVE_INT, default.max_inputs),
        max_input_tokens=input_tokens,
        max_request_tokens=request_tokens,
        max_request_bytes=request_bytes if request_bytes is not None else default.max_request_bytes,
    )
