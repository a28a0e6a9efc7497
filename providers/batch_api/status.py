"""What a Batch API job reports: its batches with their request counts, its requests, its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from providers.batch_api.state import DONE, FAILED, PENDING, BatchRow, JobRow, RequestRow

__all__ = ["BatchCostEstimate", "BatchJobResult", "BatchJobStatus", "BatchProgress", "job_status"]

JobState = Literal["running", "completed", "partial", "cancelled"]


@dataclass(frozen=True)
class BatchProgress:
    """One remote batch as last polled."""

    batch_id: str | None
    """None until the batch is created (or found again after a restart)."""
    status: str
    total: int
    completed: int
    failed: int


@dataclass(frozen=True)
class BatchJobStatus:
    job_id: str
    state: JobState
    texts: int
    """Texts the job sends (those missing from the cache when it was planned)."""
    done: int
    """Of those, texts whose vectors came back and are cached."""
    requests: int
    pending_requests: int
    failed_requests: Mapping[str, str]
    """custom_id → why it failed for good."""
    batches: tuple[BatchProgress, ...]
    requests_sent: int
    """Request lines submitted over all batches, resubmissions included."""

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def files(self) -> int:
        """Input files uploaded: one per batch."""
        return len(self.batches)


@dataclass(frozen=True)
class BatchJobResult:
    status: BatchJobStatus
    vectors: npt.NDArray[np.float32]
    """One row per input text, in input order; rows at `missing` are zeros."""
    missing: tuple[int, ...]
    """Input positions without a vector (their requests failed for good or were cancelled)."""
    space: str
    dropped: tuple[int, ...] = ()
    """Per input row, tokens cut from an over-long text before it was embedded (0: none)."""


@dataclass(frozen=True)
class BatchCostEstimate:
    """What the texts missing from the cache would cost through each engine."""

    provider: str
    model: str
    texts: int
    cached: int
    tokens: int
    usd: float | None
    """At the synchronous price; None when the model's price is unknown."""
    batch_usd: float | None
    """At the Batch API price."""


def job_status(job: JobRow, batches: Sequence[BatchRow], requests: Sequence[RequestRow]) -> BatchJobStatus:
    pending = sum(r.status == PENDING for r in requests)
    running = any(not b.collected for b in batches) or (pending > 0 and not job.cancelled)
    failed = {r.custom_id: r.error or "failed" for r in requests if r.status == FAILED}
    state: JobState = (
        "running" if running else "cancelled" if job.cancelled else "partial" if failed or pending else "completed"
    )
    return BatchJobStatus(
        job_id=job.job_id,
        state=state,
        texts=sum(r.stop - r.start for r in requests),
        done=sum(r.stop - r.start for r in requests if r.status == DONE),
        requests=len(requests),
        pending_requests=pending,
        failed_requests=failed,
        batches=tuple(BatchProgress(b.batch_id, b.status, b.total, b.completed, b.failed) for b in batches),
        requests_sent=sum(b.total for b in batches),
    )
