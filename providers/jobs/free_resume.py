"""Which interrupted jobs resume by themselves when a job runner starts: those of a free provider.

A paid provider's job waits for `resume_job`: the settings, the budget or the input may have
changed since, and it should not start spending without being asked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio.to_thread

from providers.cost import price_per_million
from providers.errors import EmbeddingError, StorageError
from providers.jobs.store import JobRecord, JobStore
from providers.settings import Settings

__all__ = ["resume_free_jobs", "resumes_by_itself"]

logger = logging.getLogger("providers.jobs.runner")


def resumes_by_itself(job: JobRecord, settings: Settings) -> bool:
    """Whether the job, interrupted, resumes when a runner starts: its provider is free (the local model)."""
    free = price_per_million(job.provider, job.model, settings) == 0.0
    return free and job.engine != "batch-api"


async def resume_free_jobs(
    store: JobStore, settings: Settings, resume: Callable[[str], Awaitable[object]]
) -> tuple[str, ...]:
    """Resume interrupted free jobs with `resume(job_id)`; one that cannot is logged. The ids resumed."""
    try:
        jobs = await anyio.to_thread.run_sync(store.interrupted)  # a locked store never blocks the loop
    except StorageError as exc:
        logger.warning("interrupted jobs were not resumed: %s", exc)
        return ()
    resumed: list[str] = []
    for job in jobs:
        if not resumes_by_itself(job, settings):
            continue
        try:
            await resume(job.id)
        except EmbeddingError as exc:
            logger.warning("job %s was not resumed by itself: %s", job.id, exc)
        else:
            resumed.append(job.id)
    return tuple(resumed)
