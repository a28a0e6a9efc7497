"""A running job's counts, written to the job store in a worker thread, at most every `every_s`.

The writes never hold up the event loop or the job: a store locked by another process only delays
them (a later write carries the newer counts), and the job's end is written in one transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import anyio
import anyio.abc
import anyio.to_thread

from providers.errors import StorageError
from providers.jobs.pipeline import Tally
from providers.jobs.store import JobRecord, JobStatus, JobStore

__all__ = ["ProgressSaver", "record_end"]

logger = logging.getLogger(__name__)


class ProgressSaver:
    """Saves `tally` as the progress of `job`; `poke()` from the job's progress callback."""

    def __init__(
        self,
        store: JobStore,
        job: JobRecord,
        tally: Tally,
        tasks: anyio.abc.TaskGroup,
        *,
        every_s: float,
        now: Callable[[], float],
    ) -> None:
        self.store = store
        self.job_id = job.id
        self.tally = tally
        # Tokens and USD, which were paid, add up over runs; rows start over with each run.
        self._paid_tokens, self._paid_usd = job.tokens, job.usd
        self._every_s = every_s
        self._now = now
        self._tasks = tasks
        self._last = -every_s
        self._due = False

    def counts(self) -> dict[str, int | float]:
        tally = self.tally
        return {
            "done": tally.written,
            "cached": tally.cached,
            "tokens": self._paid_tokens + tally.tokens,
            "usd": self._paid_usd + tally.usd,
            "truncated": tally.truncated,
            "dropped_tokens": tally.dropped_tokens,
        }

    def poke(self) -> None:
        """Write the counts soon: at once, or `every_s` after the last write (the newest counts then)."""
        if self._due:
            return
        self._due = True
        self._tasks.start_soon(self._write, max(0.0, self._last + self._every_s - self._now()))

    async def _write(self, delay: float) -> None:
        if delay:
            await anyio.sleep(delay)  # pokes meanwhile are this write's: it carries their counts
        counts = self.counts()
        try:
            await anyio.to_thread.run_sync(lambda: self.store.progress(self.job_id, **counts), abandon_on_cancel=True)
        except StorageError as exc:  # the job goes on; the next write, or its end, carries the counts
            logger.warning("job %s: its progress was not saved: %s", self.job_id, exc)
        self._last, self._due = self._now(), False
        if self.counts() != counts:  # one write at a time, even when the store is slow: then the newest
            self.poke()


async def record_end(saver: ProgressSaver, status: JobStatus, error: str | None, *, within_s: float) -> None:
    """Write the job's end: its status, last counts, notes and error, in one transaction.

    A store locked past the busy timeout is waited out again, up to `within_s`; after that the job
    is left to show as interrupted (its lease runs out), and `resume_job` goes on.
    """
    tally = saver.tally
    notes = []
    if tally.failed:
        notes.append(f"{tally.failed:,} chunks got no vector (their requests failed)")
    if tally.truncated:
        notes.append(
            f"{tally.truncated:,} chunks were longer than the model's window and were cut "
            f"({tally.dropped_tokens:,} tokens unseen; see truncated/dropped_tokens in the output rows)"
        )
    end = functools.partial(saver.store.finish, saver.job_id, status, error, counts=saver.counts(), notes=notes)
    with anyio.move_on_after(within_s):
        while True:
            try:
                await anyio.to_thread.run_sync(end, abandon_on_cancel=True)
                return
            except StorageError as exc:
                logger.warning("job %s: its end (%s) is not recorded yet: %s", saver.job_id, status, exc)
    logger.error(
        "job %s ended %s, but the job store would not record it; it shows as interrupted", saver.job_id, status
    )
