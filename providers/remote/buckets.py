"""The pieces of client-side pacing: a continuously refilled token bucket, and the queue of waiters."""

from __future__ import annotations

import math

__all__ = ["Bucket", "WaitQueue"]


class Bucket:
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
