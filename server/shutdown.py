"""How a server stops, for every transport: on SIGINT, SIGTERM or the end of its input.

```python
async def serve(shutdown: Shutdown) -> None:      # a transport
    ...  # refuse new calls once `shutdown.stopping`; wrap each call in `with shutdown.call(key):`
    await shutdown.drained()                        # in flight answered, or the grace is over
    ...  # end the session: the server's lifespan then checkpoints jobs and releases reservations

anyio.run(serve_until_stopped, serve)
```

A host closing a session sends SIGINT and, 100 ms later, SIGTERM (Claude Code), or closes stdin:
every one of these only asks to stop, once. The calls in flight get `GRACE_S` to finish; then the
transport ends the session normally (not by cancelling the whole process), so the lifespan's
clean-up runs in full.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager

import anyio
import anyio.abc

__all__ = ["GRACE_S", "STOP_SIGNALS", "Shutdown", "serve_until_stopped"]

logger = logging.getLogger(__name__)

GRACE_S = 2.0
"""How long calls in flight may run on after a stop is asked for."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _say(line: str) -> None:
    print(f"signal-hub-embeddings: {line}", file=sys.stderr, flush=True)


class Shutdown:
    """A request to stop (the first reason wins), the calls in flight, and the grace they get."""

    def __init__(self, grace_s: float = GRACE_S, *, say: Callable[[str], None] = _say) -> None:
        self.grace_s = grace_s
        self.reason: str | None = None
        self.requested = anyio.Event()
        self.say = say
        self._calls: set[Hashable] = set()
        self._changed = anyio.Event()
        self._drained: anyio.Event | None = None
        self.cut = 0
        """Calls still in flight when the grace ran out (the transport cancels them)."""

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def request(self, reason: str) -> None:
        """Ask to stop; later requests (the SIGTERM after a SIGINT) change nothing."""
        if self.reason is not None:
            logger.info("already stopping (%s); %s changes nothing", self.reason, reason)
            return
        self.reason = reason
        calls = f"; {self.in_flight} call(s) in flight get {self.grace_s:g} s" if self._calls else ""
        self.say(f"stopping ({reason}){calls}")
        self.requested.set()

    def call_started(self, key: Hashable) -> None:
        self._calls.add(key)

    def call_finished(self, key: Hashable) -> None:
        if key in self._calls:
            self._calls.discard(key)
            self._changed.set()
            self._changed = anyio.Event()

    @contextmanager
    def call(self, key: Hashable) -> Iterator[None]:
        """One call in flight for as long as the block runs (for transports that see a call's whole life)."""
        self.call_started(key)
        try:
            yield
        finally:
            self.call_finished(key)

    async def drained(self) -> None:
        """Once a stop is asked for: return when no call is in flight, or when the grace is over."""
        await self.requested.wait()
        if self._drained is None:  # the first caller waits; others wait for it
            self._drained = anyio.Event()
            with anyio.move_on_after(self.grace_s):
                while self._calls:
                    await self._changed.wait()
            self.cut = len(self._calls)
            if self.cut:
                self.say(f"{self.cut} call(s) still running after {self.grace_s:g} s are cancelled")
            self._drained.set()
        await self._drained.wait()


async def serve_until_stopped(
    serve: Callable[[Shutdown], Awaitable[None]],
    *,
    grace_s: float = GRACE_S,
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
    ignore_once_stopped: bool = False,
) -> Shutdown:
    """Run `serve(shutdown)` with `signals` turned into `shutdown.request(...)`; return when it returns.

    The signals are caught until `serve` has finished cleaning up, so a second one (a SIGTERM
    100 ms after the SIGINT, a second Ctrl-C) cannot cut the clean-up short or print a traceback.
    Then their handlers are given back, or, with `ignore_once_stopped` (a process about to exit 0),
    ignored from the moment the stop is done: a late SIGTERM must not turn exit 0 into a kill.
    """
    shutdown = Shutdown(grace_s)

    async def watch(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with anyio.open_signal_receiver(*signals) as received:
                task_status.started()  # caught from here on
                async for number in received:
                    shutdown.request(signal.Signals(number).name)
        finally:
            if ignore_once_stopped and shutdown.stopping:
                for number in signals:
                    signal.signal(number, signal.SIG_IGN)

    async with anyio.create_task_group() as tasks:
        await tasks.start(watch)
        try:
            await serve(shutdown)
        finally:
            tasks.cancel_scope.cancel()
    if shutdown.stopping:
        shutdown.say("stopped")
    return shutdown
