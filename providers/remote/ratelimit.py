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
from typing import TypeVar

import anyio

__all__ = [
    "INTERACTIVE_TOKENS",
    "Clock",
    "RateLimiter",
    "Sleep",
    "WaitQueue",
    "parse_duration",
    "parse_retry_after",
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
# Seconds a waiter whose turn has not come waits at least before it looks again.
_MIN_POLL = 0.005
INTERACTIVE_TOKENS = 4096
"""Estimated tokens up to which a request counts as interactive (an agent's few texts) and goes first."""
_T = TypeVar("_T")


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


class _Bucket:
    """A token bucket; `capacity` None means no limit is known (nothing is held back)."""

    def __init__(self, configured: float | None, window: float, now: float) -> None:
        self.configured = configured
        self.window = window
        self.learned: float | None = None
        """The limit the server last reported (None: not yet, or unlimited)."""
        self.measured: float | None = None
        """The server's refill rate as its `reset` header tells it (None: not measured)."""
        self.capacity = configured
        self.base_rate = configured / window if configured else 0.0
        self.rate = self.base_rate
        self.level = configured or 0.0
        self.stamp = now

    def state(self) -> tuple[float | None, float | None, float | None]:
        """What other processes need to share this bucket: the learned limit, refill rate and level."""
        return self.learned, self.measured, self.level if self.capacity is not None else None

    def load(self, learned: float | None, measured: float | None, level: float | None, stamp: float) -> None:
        """Take over a bucket `state()` saved at `stamp` (this process's configured limit still holds)."""
        self.learned, self.measured = learned, measured
        self._set_capacity()
        cap = self.capacity
        self.level = (cap if level is None else min(level, cap)) if cap is not None else 0.0
        self.stamp = stamp

    def _set_capacity(self) -> None:
        known = [limit for limit in (self.configured, self.learned) if limit is not None]
        self.capacity = min(known) if known else None
        self.base_rate = self.capacity / self.window if self.capacity else 0.0
        # The rate never rises above the configured one.
        self.rate = min(self.measured, self.base_rate) if self.measured and self.capacity else self.base_rate

    def refill(self, now: float) -> None:
        if self.capacity is not None:
            # A clock that went back (another machine, a reboot) refills nothing.
            self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until `amount` (at most a full bucket) can be taken."""
        self.refill(now)
        if self.capacity is None:
            return 0.0
        missing = min(amount, self.capacity) - self.level
        # Under a microsecond is rounding: a wall clock's seconds since 1970 cannot move by less.
        return missing / self.rate if missing > 1e-6 * self.rate else 0.0

    def take(self, amount: float) -> None:
        # A request larger than the bucket goes when the bucket is full and leaves a debt.
        if self.capacity is not None:
            self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        self.refill(now)
        if self.capacity is not None:
            self.level = min(self.capacity, self.level + amount)

    def observe(self, limit: float | None, remaining: float | None, reset: float | None, now: float) -> None:
        """Fold in what the server reported about its own bucket."""
        self.refill(now)
        if limit is not None and limit > 0 and limit != self.learned:
            was_unknown = self.capacity is None
            self.learned = limit
            self._set_capacity()
            assert self.capacity is not None
            self.level = self.capacity if was_unknown else min(self.level, self.capacity)
        if self.capacity is None or remaining is None:
            return
        self.level = min(self.level, remaining)
        # `reset` is when the server's bucket will be full again: that gives its refill rate.
        # Only a sizeable gap measures it well.
        gap = self.capacity - remaining
        self.measured = gap / reset if reset is not None and reset > 0 and gap >= 0.05 * self.capacity else None
        self._set_capacity()


class WaitQueue:
    """Who waits for the buckets, in turn: interactive requests (priority 0) before batch ones (1).

    Each waiter holds a lease it renews while it waits; one that stops renewing (its process
    died) drops out when the lease expires. This one lives in memory; `pacing` keeps one in SQLite.
    """

    def __init__(self) -> None:
        self._waiters: dict[int, tuple[int, float, float]] = {}  # ticket → priority, charge, expires
        self._last_ticket = 0

    def expire(self, now: float, lease: float) -> None:
        """Drop waiters whose lease ran out (or lies implausibly far ahead: a clock went back)."""
        for ticket, (_, _, expires) in list(self._waiters.items()):
            if not now <= expires <= now + lease:
                del self._waiters[ticket]

    def ahead(self, priority: int, ticket: int | None) -> list[float]:
        """Charges of the waiters whose turn comes before this one's (a newcomer's: ticket None)."""
        mine = (priority, math.inf if ticket is None else ticket)
        return [charge for other, (rank, charge, _) in self._waiters.items() if (rank, other) < mine]

    def hold(self, ticket: int | None, priority: int, charge: float, expires: float) -> int:
        """Join the queue (ticket None) or renew the lease; returns the ticket."""
        if ticket is None:
            self._last_ticket += 1
            ticket = self._last_ticket
        self._waiters[ticket] = (priority, charge, expires)
        return ticket

    def leave(self, ticket: int) -> None:
        self._waiters.pop(ticket, None)


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
        self._requests = _Bucket(rpm, window, now)
        self._tokens = _Bucket(tpm, window, now)
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

    async def acquire(self, tokens: int = 0, *, interactive: bool | None = None) -> int:
        """Wait until one request and `tokens` estimated tokens fit; return the tokens charged.

        `interactive` None: a request of at most `interactive_tokens` is. Every charge must later
        be `settle`d, whether the request succeeded or not.
        """
        priority = 0 if (tokens <= self._interactive_tokens if interactive is None else interactive) else 1
        async with self._lanes[priority]:
            ticket: int | None = None
            try:
                while True:
                    wait, ticket, charge = self._synced(partial(self._take_or_queue, tokens, priority, ticket))
                    if wait <= 0:
                        self._outstanding += charge
                        return charge
                    await self._sleep(wait)
            finally:
                if ticket is not None:  # cancelled while waiting: give the place up now
                    self._synced(partial(self._leave, ticket))

    def _take_or_queue(self, tokens: int, priority: int, ticket: int | None) -> tuple[float, int | None, int]:
        """Take the request's share if it fits and its turn has come, else hold its place.

        Returns (seconds to wait: 0 when taken, the ticket of its place, the tokens charged).
        """
        charge = self.charge_for(tokens)
        # When the estimate is not exact, keep headroom for how far the API's count of this
        # request and of those it has not yet answered may exceed their charge.
        headroom = _HEADROOM_SPREADS * self._spread * (charge + self._outstanding)
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
