"""The local model's lanes: threads that run model calls back to back, short calls first.

Every caller shares one model. A call queues its windows; each lane (a thread) takes the next
model call's windows from the first short call waiting (an agent's one-text `embed_text`), else
from the long calls in turn, up to `turn` windows each (a step by default). So:
- the lanes never wait for the event loop between model calls, however busy it is;
- a short call waits for at most the model calls in progress, never for a step or a batch;
- one client's 2,048-text batch cannot starve another's: long calls take turns.
The vectors come back a `step` of windows at a time, for progress and for keeping each step's
work. Short turns share the model evenly, but batches sent together then end together, and the
work each client sends next arrives all at once; with turns a batch fits in, they end one after
another (32 clients: one-text p95 about 35 ms with turns of 8 windows, 21-25 ms with 128).

With `background` (Linux), long calls run on lanes at the OS's idle priority (SCHED_IDLE) and
short calls on lanes of their own at normal priority. Long calls then use every core nothing else
wants, and give way at once to whatever does: the event loop answering clients, the worker
threads, a short call. Measured on 2 cores with 32 HTTP clients (`benchmarks/http_clients.py`,
turns of 128, medians of 3 rounds): one-text p95 4.3x idle (60 ms) at normal priority, 1.2x
(23 ms) in the background; batch throughput 0.93x and 0.95x in-process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import anyio
import anyio.lowlevel
import numpy as np
import numpy.typing as npt

from providers.errors import ProviderError

__all__ = ["BATCH_PRIORITIES", "BatchPriority", "Encode", "ModelLanes"]

logger = logging.getLogger(__name__)

Encode = Callable[[list[list[int]]], npt.NDArray[np.float32]]
"""One model call: token windows in, their vectors out."""
Piece = tuple[list[int], npt.NDArray[np.float32]]
"""Positions of finished windows in the call, and their vectors."""
BatchPriority = Literal["idle", "normal"]
"""The OS priority of long calls' model work: "idle" runs it on cores nothing else wants (Linux)."""
BATCH_PRIORITIES: tuple[BatchPriority, ...] = get_args(BatchPriority)
_Takes = Literal["any", "short", "long"]
"""The calls a lane serves."""


@dataclass(eq=False)
class _Call:
    windows: list[list[int]]
    short: bool
    wake: Callable[[], object]
    """Wakes the waiting task; safe from any thread, never waits for the event loop."""
    claimed: int = 0
    """Windows handed to lanes so far (they are taken in order)."""
    in_turn: int = 0
    """Windows a long call has had in its current turn."""
    done: int = 0
    finished: list[Piece] = field(default_factory=list)
    """Finished pieces the waiting task has not taken yet."""
    unseen: int = 0
    """Windows in `finished`."""
    woken: bool = False
    error: BaseException | None = None
    gone: bool = False


class ModelLanes:
    """`lanes` threads calling `encode` with up to `batch_size` windows; see the module's docstring."""

    def __init__(
        self,
        encode: Encode,
        *,
        lanes: int,
        batch_size: int,
        step: int,
        turn: int | None = None,
        background: bool = False,
        name: str = "local-model",
    ) -> None:
        self._encode = encode
        self._batch_size = batch_size
        self._step = step
        self._turn = turn or step
        self._ready = threading.Condition()
        self._short: deque[_Call] = deque()
        self._long: deque[_Call] = deque()
        self._closed = False
        self.calls = 0
        """Model calls made so far."""
        self.lanes = lanes
        self.background = background and hasattr(os, "SCHED_IDLE")
        """Long calls on lanes at idle priority, short calls on lanes of their own (see the module's docstring)."""
        kinds: list[_Takes] = ["long", "short"] if self.background else ["any"]
        for takes in kinds:
            for number in range(lanes):
                threading.Thread(target=self._lane, args=(takes,), name=f"{name}-{takes}-{number}", daemon=True).start()

    @property
    def waiting(self) -> int:
        """Calls with windows no lane has taken yet."""
        with self._ready:
            return len(self._short) + len(self._long)

    async def run(self, windows: list[list[int]], *, short: bool) -> AsyncGenerator[Piece, None]:
        """The vectors of `windows` as they are made, a step of windows at a time (the last may be less).

        Close the iterator (`contextlib.aclosing`) when leaving early: its windows are dropped.
        """
        woken = anyio.Event()

        def wake() -> None:  # runs on the event loop
            woken.set()

        native: Any = anyio.lowlevel.current_token().native_token
        schedule = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon  # asyncio, or trio
        call = _Call(windows, short, wake=lambda: schedule(wake))
        with self._ready:
            if self._closed:
                raise ProviderError("the local model was closed; call again to load it.")
            (self._short if short else self._long).append(call)
            self._ready.notify_all()
        kept: list[Piece] = []
        handed = 0
        try:
            while handed < len(windows):
                await woken.wait()
                woken = anyio.Event()
                with self._ready:
                    kept += call.finished
                    call.finished, call.unseen, call.woken = [], 0, False
                    error = call.error
                if error is not None:
                    raise error
                while kept:
                    ready = sum(len(positions) for positions, _ in kept)
                    if ready < self._step and handed + ready < len(windows):
                        break
                    piece, kept = _first_step(kept, self._step)
                    handed += len(piece[0])
                    yield piece
        finally:
            with self._ready:
                call.gone = True
                self._drop(call)

    def close(self) -> None:
        """Stop the lanes once their model calls in progress end; calls still waiting are told."""
        with self._ready:
            self._closed = True
            for call in (*self._short, *self._long):
                call.error = ProviderError("the local model was closed while this call waited; call again.")
                call.wake()
            self._short.clear()
            self._long.clear()
            self._ready.notify_all()

    def _lane(self, takes: _Takes) -> None:
        if takes == "long":
            _to_idle_priority()
        while True:
            with self._ready:
                while not self._closed and not self._line(takes):
                    self._ready.wait()
                if self._closed:
                    return
                call, start, end = self._claim(self._line(takes))
            try:
                vectors = self._encode(call.windows[start:end])
            except Exception as exc:  # the caller hears of it; the lane serves the others
                with self._ready:
                    self._drop(call)
                    if not call.gone and call.error is None:
                        call.error = exc
                        call.wake()
                continue
            with self._ready:
                self.calls += 1
                if call.gone or call.error is not None:
                    continue
                call.finished.append((list(range(start, end)), vectors))
                call.done += end - start
                call.unseen += end - start
                if not call.woken and (call.unseen >= self._step or call.done == len(call.windows)):
                    call.woken = True
                    call.wake()

    def _line(self, takes: _Takes) -> deque[_Call]:
        """The calls a lane taking `takes` serves next (the lock held): empty if none."""
        if takes == "any":
            return self._short or self._long
        return self._short if takes == "short" else self._long

    def _claim(self, line: deque[_Call]) -> tuple[_Call, int, int]:
        """The next model call's windows from the first call in `line` (the lock held); a long call
        goes to the back of its line when its turn is over."""
        call = line[0]
        start = call.claimed
        end = min(start + self._batch_size, len(call.windows))
        call.claimed = end
        if end == len(call.windows):
            line.popleft()
        elif not call.short:
            call.in_turn += end - start
            if call.in_turn >= self._turn:  # its turn is over: to the back of the line
                call.in_turn = 0
                line.rotate(-1)
        return call, start, end

    def _drop(self, call: _Call) -> None:
        """Take `call`'s windows no lane has claimed out of line (the lock held)."""
        for line in (self._short, self._long):
            if call in line:
                line.remove(call)


def _first_step(pieces: list[Piece], step: int) -> tuple[Piece, list[Piece]]:
    """Up to `step` windows from the front of `pieces` as one piece, and what is left."""
    positions = [position for piece_positions, _ in pieces for position in piece_positions]
    vectors = np.concatenate([piece_vectors for _, piece_vectors in pieces])
    if len(positions) <= step:
        return (positions, vectors), []
    return (positions[:step], vectors[:step]), [(positions[step:], vectors[step:])]


def _to_idle_priority() -> None:
    """This thread to SCHED_IDLE. Lowering is always allowed; only going back would need privileges."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:  # a sandbox may refuse it: the lane still runs, at normal priority
        logger.debug("a model lane stays at normal priority: %s", exc)
