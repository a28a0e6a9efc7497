"""Client-side pacing: request and token buckets that follow the API's rate-limit headers.

```python
limiter = RateLimiter(rpm=3000, tpm=1_000_000)
charged = await limiter.acquire(estimated_tokens)   # waits until both buckets allow the request
...                                                  # send it
limiter.update_from_headers(response.headers)        # x-ratelimit-remaining-* / -reset-*
limiter.settle(charged, estimated_tokens, usage.prompt_tokens)  # also after a failure
```

Each bucket holds up to a minute's allowance (`window` seconds, so tests and benchmarks can
compress time) and refills continuously, like the API's own limiter. The headers correct the
local picture after every response: `remaining` lowers a bucket that thinks it has more (the
same key may be used elsewhere), `reset` (the time until the bucket is full again) gives the
server's actual refill rate, and `limit` fills in a limit that was not configured.

Token counts the caller estimates are converted to the API's count by a ratio learned from the
usage it reports, so an over-counting estimate does not throttle the client to a fraction of
its allowance; when that ratio varies from request to request, the limiter keeps headroom in
proportion, so a request the API counts higher than expected does not meet a 429.

Requests take turns: those of at most `INTERACTIVE_TOKENS` estimated tokens (an agent's call
of a few texts) before bigger ones, otherwise in the order they asked (`WaitQueue`). The state
lives in this object here; `pacing.SharedPacer` keeps the same state in SQLite for many processes.

Clock and sleep are injectable: unit tests run on a fake clock and never sleep.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import anyio

from providers.errors import RateLimitError
from providers.remote.buckets import Bucket, WaitQueue

__all__ = [
    "INTERACTIVE_TOKENS",
    "Clock",
    "PausedError",
    "RateLimiter",
    "Sleep",
    "WaitQueue",
    "parse_duration",
    "parse_retry_after",
    "paused_if_long",
]

Clock = Callable[[], float]
"""Monotonic seconds, like `time.monotonic`."""
Sleep = Callable[[float], Awaitable[None]]
"""Waits some seconds, like `anyio.sleep`."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# Weight of older requests in the learned estimate→API token ratio and its spread: texts of
# one kind tend to come together, so the recent requests predict the next one best.
_RATIO_DECAY = 0.7
# Headroom, in spreads, kept over the charge of the requests the API has not yet counted.
_HEADROOM_SPREADS = 2.0
# Once the API's count is seen to stray at all, the spread the headroom assumes is at least this:
# a few requests' spread underestimates the next one's, and other processes' requests in flight
# stray too.
_MIN_SPREAD = 0.05
# Seconds a waiter whose turn has not come waits at least before it looks again.
_MIN_POLL = 0.005
INTERACTIVE_TOKENS = 4096
"""Estimated tokens up to which a request counts as interactive (an agent's few texts) and goes first."""
_T = TypeVar("_T")
# Seconds an outage's circuit stays open at most for a pause the server asked for: a probe after
# that finds the pause still stored and costs nothing.
_LONGEST_CIRCUIT = 3600.0


class PausedError(RateLimitError):
    """The server asked to pause every request for longer than a request may wait: an outage.

    `resume_in` is how long until it takes requests again; the circuit breaker opens for that long.
    """

    def __init__(self, message: str, *, resume_in: float) -> None:
        super().__init__(message)
        self.resume_in = resume_in
        self.open_circuit_s = min(resume_in, _LONGEST_CIRCUIT)


def paused_if_long(error: Exception, failure: Any, budget: float) -> Exception:
    """`error` as a `PausedError` when the server asked to pause for longer than a request's `budget`.

    `failure` is the engine's `retry.Failure` of the last attempt (rate_limited, retry_after).
    """
    seconds = failure.retry_after
    if not failure.rate_limited or seconds is None or seconds <= budget:
        return error
    resume = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + seconds))
    return PausedError(
        f"{error} The server asked to pause every request for {seconds:.0f} s, longer than a request may wait "
        f"(MAX_RETRY_S, {budget:.0f} s): it takes requests again at about {resume}.",
        resume_in=seconds,
    )


def parse_duration(value: str | None) -> float | None:
    """Seconds in a rate-limit duration such as `6m0s`, `1s`, `12ms`, `2m3.5s` or `0.5`.

    None for a missing, negative (`-1`: not reported) or unreadable value.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            return None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asks to wait: `retry-after-ms`, else `retry-after` (seconds or HTTP date)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    milliseconds = _non_negative(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _non_negative(raw)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


def _non_negative(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets shared by every request of a provider.

    `rpm`/`tpm` None: no client-side limit until the API's `x-ratelimit-limit-*` headers tell one.
    Requests of at most `interactive_tokens` estimated tokens (an agent's call of a few texts)
    take their turn before bigger ones; among equals, requests leave in the order they asked.
    """

    lease = 5.0
    """Seconds a waiter's place in the queue lasts unless renewed."""
    _renew_every = math.inf
    """Seconds a waiter sleeps at most before it renews its lease (in one process, no need)."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        window: float = 60.0,
        interactive_tokens: int = INTERACTIVE_TOKENS,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if window <= 0 or (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError("rpm, tpm and window must be positive")
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._requests = Bucket(rpm, window, now)
        self._tokens = Bucket(tpm, window, now)
        self._paused_until = now
        self._queue = WaitQueue()
        self._interactive_tokens = interactive_tokens
        # One lane per priority, each FIFO: a process has at most one waiter of each in the queue.
        self._lanes = (anyio.Lock(), anyio.Lock())
        self._estimated_sum = 0.0
        self._used_sum = 0.0
        self._spread = 0.0
        self._outstanding = 0

    @property
    def rpm(self) -> float | None:
        """The request limit in force (configured, or learned from the headers)."""
        return self._synced(lambda: self._requests.capacity)

    @property
    def tpm(self) -> float | None:
        """The token limit in force (configured, or learned from the headers)."""
        return self._synced(lambda: self._tokens.capacity)

    @property
    def token_ratio(self) -> float:
        """API-counted tokens per estimated token, learned from reported usage (1.0 until then)."""
        return self._used_sum / self._estimated_sum if self._estimated_sum > 0 else 1.0

    @property
    def token_spread(self) -> float:
        """How far, relatively, a request's API count typically strays from `token_ratio` (0: exact)."""
        return self._spread

    def charge_for(self, tokens: int) -> int:
        """Tokens `acquire(tokens)` would take from the token bucket right now."""
        return math.ceil(tokens * self.token_ratio)

    async def acquire(self, tokens: int = 0, *, interactive: bool | None = None, within: float | None = None) -> int:
        """Wait until one request and `tokens` estimated tokens fit; return the tokens charged.

        `interactive` None: a request of at most `interactive_tokens` is. Every charge must later
        be `settle`d, whether the request succeeded or not. `within`: seconds the request may
        wait at most (its retry budget); a longer wait raises `RateLimitError` at once, and a
        pause the server asked for that is longer raises `PausedError` (an outage), saying when
        the server takes requests again.
        """
        priority = 0 if (tokens <= self._interactive_tokens if interactive is None else interactive) else 1
        async with self._lanes[priority]:
            # The budget counts this request's own turn: the lane holds this process's other
            # requests of its kind, each bounded alike.
            started = self._clock()
            ticket: int | None = None
            try:
                while True:
                    wait, ticket, charge = self._synced(partial(self._take_or_queue, tokens, priority, ticket))
                    if wait <= 0:
                        self._outstanding += charge
                        return charge
                    if within is not None:
                        self._check_budget(within - (self._clock() - started), wait)
                    await self._sleep(wait)
            finally:
                if ticket is not None:  # cancelled while waiting: give the place up now
                    self._synced(partial(self._leave, ticket))

    def _check_budget(self, left: float, wait: float) -> None:
        """Raise rather than wait past a request's budget (`left` seconds) for a pause or the buckets."""
        now = self._clock()
        paused = self._paused_until - now
        if paused > left:
            resume = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + paused))
            raise PausedError(
                f"the server asked (429, Retry-After) to pause every request for {paused:.0f} s more, longer than "
                f"a request may wait ({max(0.0, left):.0f} s of its retry budget, MAX_RETRY_S, left): it takes "
                f"requests again at about {resume}.",
                resume_in=paused,
            )
        if wait > left:
            raise RateLimitError(
                f"the rate limits leave this request no turn within its retry budget: it would wait {wait:.0f} s "
                f"more, {max(0.0, left):.0f} s are left (MAX_RETRY_S). Retry later, or raise the budget."
            )

    def _take_or_queue(self, tokens: int, priority: int, ticket: int | None) -> tuple[float, int | None, int]:
        """Take the request's share if it fits and its turn has come, else hold its place.

        Returns (seconds to wait: 0 when taken, the ticket of its place, the tokens charged).
        """
        charge = self.charge_for(tokens)
        # When the estimate is not exact, keep headroom for how far the API's count of this
        # request and of those it has not yet answered may exceed their charge.
        spread = max(self._spread, _MIN_SPREAD) if self._spread > 0 else 0.0
        headroom = _HEADROOM_SPREADS * spread * (charge + self._outstanding)
        now = self._clock()
        self._queue.expire(now, self.lease)
        ahead = self._queue.ahead(priority, ticket)
        wait = max(
            self._paused_until - now,
            self._requests.wait(1 + len(ahead), now),
            self._tokens.wait(sum(ahead) + charge + headroom, now),
        )
        if wait <= 0 and not ahead:
            self._requests.take(1)
            self._tokens.take(charge)
            if ticket is not None:
                self._queue.leave(ticket)
            return 0.0, None, charge
        ticket = self._queue.hold(ticket, priority, charge, now + self.lease)
        if ahead:  # they may be slow to take their turn: look again soon
            wait = max(wait, _MIN_POLL)
        return min(wait, self._renew_every), ticket, charge

    def _leave(self, ticket: int) -> None:
        self._queue.leave(ticket)

    def _synced(self, change: Callable[[], _T]) -> _T:
        """Run `change` on the buckets and queue; a shared pacer loads and saves them around it."""
        return change()

    def settle(self, charged: int, estimated: int, used: int | None) -> None:
        """Close a charge: the API counted `used` tokens (0: it refused the request; None: unknown).

        The token bucket gets back what was charged beyond the count, and a known count teaches
        the estimate→API ratio.
        """
        self._outstanding = max(0, self._outstanding - charged)
        if used is None:
            return  # a timeout or dropped connection: the API may have counted it, keep the charge
        self._refund(charged - used)
        if estimated > 0 and used > 0:
            self._learn(estimated, used)

    def _learn(self, estimated: int, used: int) -> None:
        predicted = self.token_ratio
        observed = used / estimated
        error = abs(observed - predicted) / predicted if self._estimated_sum > 0 else 0.0
        self._spread = self._spread * _RATIO_DECAY + error * (1 - _RATIO_DECAY)
        self._estimated_sum = self._estimated_sum * _RATIO_DECAY + estimated
        self._used_sum = self._used_sum * _RATIO_DECAY + used

    def _refund(self, tokens: int) -> None:
        self._tokens.give_back(tokens, self._clock())

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (the server said to retry after that long)."""

        def hold() -> None:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

        self._synced(hold)

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Adapt to `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; missing or -1 values are ignored."""
        lowered = {name.lower(): value for name, value in headers.items()}
        reported = [
            (
                bucket,
                _non_negative(lowered.get(f"x-ratelimit-limit-{kind}")),
                _non_negative(lowered.get(f"x-ratelimit-remaining-{kind}")),
                parse_duration(lowered.get(f"x-ratelimit-reset-{kind}")),
            )
            for kind, bucket in (("requests", self._requests), ("tokens", self._tokens))
        ]
        if all(values[1:] == (None, None, None) for values in reported):
            return

        def observe() -> None:
            now = self._clock()
            for bucket, limit, remaining, reset in reported:
                bucket.observe(limit, remaining, reset, now)

        self._synced(observe)
