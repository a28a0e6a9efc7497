"""When a provider is down: which failures count as an outage, and a circuit breaker per provider.

closed ──(N consecutive outages, or one quota/auth failure, a long pause or a hang)──▶ open
open ──(cool-down elapsed)──▶ half-open: the next call is a probe
half-open ──(probe works)──▶ closed      half-open ──(probe fails)──▶ open
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from providers.errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)

__all__ = ["OUTAGES", "CircuitBreaker", "CircuitState", "FallbackPolicy"]

OUTAGES = (QuotaExceededError, AuthenticationError, RateLimitError, ProviderUnavailableError)
"""Failures another provider can answer for. Bad input or a bad setting is not one of them."""

# Waiting cannot fix these: open the circuit at once.
_OPEN_AT_ONCE = (QuotaExceededError, AuthenticationError)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class FallbackPolicy:
    """`on_outage`: answer from the next provider of `chain` when one is down; `never`: fail."""

    mode: str = "on_outage"
    chain: tuple[str, ...] = ("openai", "local")
    failure_threshold: int = 3
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in ("on_outage", "never"):
            raise ConfigurationError(f"fallback policy {self.mode!r} is not 'on_outage' or 'never'.")

    def fallbacks_for(self, provider: str) -> tuple[str, ...]:
        if self.mode == "never" or provider not in self.chain:
            return ()
        return self.chain[self.chain.index(provider) + 1 :]


class CircuitBreaker:
    """Counts a provider's consecutive outages and keeps calls away from it while it is down."""

    def __init__(
        self, *, failure_threshold: int = 3, cooldown_s: float = 60.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._now = now
        self._failures = 0
        self._opened_at: float | None = None
        self._open_for = cooldown_s
        self.last_error: str | None = None

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._now() - self._opened_at >= self._open_for:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def retry_in_s(self) -> float:
        """Seconds until the next probe is allowed (0 unless open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._open_for - self._now())

    def allows_request(self) -> bool:
        return self.state is not CircuitState.OPEN

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self.last_error = None

    def record_failure(self, error: Exception) -> None:
        self._failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        # An error may say how long the provider stays down (a pause it asked for, a server that
        # hangs): then the circuit opens at once, for at least that long.
        down_for = getattr(error, "open_circuit_s", None)
        self._open_for = max(self._cooldown, down_for) if isinstance(down_for, int | float) else self._cooldown
        if (
            isinstance(error, _OPEN_AT_ONCE)
            or down_for is not None
            or self._failures >= self._threshold
            or self._opened_at is not None
        ):
            self._opened_at = self._now()
