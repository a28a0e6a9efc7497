"""What one attempt of a remote request returns, what its failure means, and when to try again."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from tenacity import AsyncRetrying, RetryCallState

from providers.remote.options import RemoteOptions
from providers.remote.ratelimit import Clock, Sleep

__all__ = ["Failure", "Reply", "retry_policy"]

logger = logging.getLogger("providers.remote.engine")


@dataclass(frozen=True)
class Reply:
    """One successful request: its vectors in request order, the usage it reported, its headers."""

    vectors: npt.NDArray[np.float32]
    tokens: int | None
    """Tokens the server reported (None: it reported no usage; our estimate is used and marked)."""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """What one failed attempt means to the engine."""

    retry: bool
    """A later identical request could get through (rate limit, 5xx, timeout, dropped connection)."""
    answered: bool = False
    """The server answered and refused the request, so it counted none of its tokens."""
    too_large: bool = False
    """The request as a whole was too large: send it again in two halves."""
    refused: bool = False
    """Nothing listens at the endpoint: an outage after `refused_attempts`."""
    timed_out: bool = False
    """No answer in time: an outage after `timeout_attempts`."""
    retry_after: float | None = None
    """Seconds the server asked to wait."""
    rate_limited: bool = False
    """Pause every request of the provider for `retry_after`, not only this one."""
    headers: Mapping[str, str] = field(default_factory=dict)


def retry_policy(
    options: RemoteOptions,
    classify: Callable[[BaseException], Failure | None],
    clock: Clock,
    sleep: Sleep,
    started: float,
    label: str,
) -> AsyncRetrying:
    """Retries of one request: what `classify` calls transient, within the attempts and time budget.

    The wait is what the server asked for, else exponential backoff with jitter. A refused
    connection ends after `refused_attempts`: nothing listens there, and waiting will not change that;
    a request that timed out, after `timeout_attempts` (a hung server costs each caller the timeout).
    """

    def failure(state: RetryCallState) -> Failure | None:
        exc = state.outcome.exception() if state.outcome else None
        return classify(exc) if isinstance(exc, Exception) else None

    def should_retry(state: RetryCallState) -> bool:
        found = failure(state)
        return found is not None and found.retry

    def wait(state: RetryCallState) -> float:
        found = failure(state)
        if found is not None and found.retry_after is not None:
            return found.retry_after
        ceiling = min(options.backoff_max, options.backoff_initial * 2.0 ** (state.attempt_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def should_stop(state: RetryCallState) -> bool:
        if state.attempt_number >= options.max_attempts:
            return True
        found = failure(state)
        if found is not None and found.refused and state.attempt_number >= options.refused_attempts:
            return True
        if found is not None and found.timed_out and state.attempt_number >= options.timeout_attempts:
            return True
        # Give up now rather than sleep past the time budget and fail anyway.
        return clock() - started + (state.upcoming_sleep or 0.0) > options.max_retry_seconds

    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = getattr(exc, "status_code", None) or type(exc).__name__
        logger.info(
            "%s request failed (%s); attempt %d, retrying in %.2fs",
            label,
            status,
            state.attempt_number,
            state.upcoming_sleep,
        )

    return AsyncRetrying(retry=should_retry, wait=wait, stop=should_stop, sleep=sleep, before_sleep=log, reraise=True)
