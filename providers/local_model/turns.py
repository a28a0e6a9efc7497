"""Turns at the one local model that every caller shares: one encode at a time, short calls first.

A long call (a 2,048-text batch) takes one turn per step of a few windows, so a call that fits
in one step (an agent's one-text `embed_text`) waits for at most the step in progress, never
for the whole batch. Within each kind, turns go in the order they were asked for.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["ModelTurns"]


class ModelTurns:
    """One turn at a time; a waiting `short` turn goes before every waiting long one."""

    def __init__(self) -> None:
        self._busy = False
        self._short: deque[anyio.Event] = deque()
        self._long: deque[anyio.Event] = deque()

    @property
    def waiting(self) -> int:
        return len(self._short) + len(self._long)

    @asynccontextmanager
    async def turn(self, *, short: bool) -> AsyncIterator[None]:
        # One event loop thread and no await between a check and its update: no lock needed.
        if self._busy:
            line = self._short if short else self._long
            handed = anyio.Event()
            line.append(handed)
            try:
                await handed.wait()
            except BaseException:
                if handed.is_set():  # given the turn while being cancelled: pass it on
                    self._hand_on()
                else:
                    line.remove(handed)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        """Give the turn straight to the next in line (it stays busy), or free it."""
        line = self._short or self._long
        if line:
            line.popleft().set()
        else:
            self._busy = False
