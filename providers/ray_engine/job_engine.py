"""Ray Data as a job engine for the local model: one machine or a cluster.

```python
engine = RayJobEngine(settings, InProcessEngine(job_settings(settings)).provider, address="ray://head:10001")
await engine.run(EngineJob("job-1", "local", space), chunks, writer, tally, on_progress)
```

The job's chunks go to `<data dir>/ray_jobs/<job id>/input.jsonl` (ids as row numbers, so any
id survives Arrow), `run_ray_job` embeds them into shards beside it in a worker thread, and the
shards are streamed into the job's writer in input order. The directory is kept until the job is
written, so a run killed and started again with the same job id redoes only the shards without a
file (and the cache answers the rest). Cancelling the task stops Ray between batches.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from providers.base import EmbeddingProvider
from providers.errors import EmbeddingError, InputError
from providers.jobs.engine import EngineJob
from providers.jobs.files import Chunk
from providers.jobs.pipeline import Tally
from providers.jobs.writers import VectorWriter
from providers.settings import Settings

if TYPE_CHECKING:
    from providers.ray_engine import RayJobReport

__all__ = ["RayJobEngine"]

SHARD_ROWS = 1000


class RayJobEngine:
    """A `JobEngine` over `run_ray_job`; local provider only."""

    name = "ray"

    def __init__(
        self,
        settings: Settings,
        providers: Callable[[str | None], EmbeddingProvider],
        *,
        address: str | None = None,
        actors: int | None = None,
        shard_rows: int = SHARD_ROWS,
        batch_rows: int = 256,
    ) -> None:
        self.settings = settings
        self._providers = providers
        self.address = address
        self.actors = actors
        self.shard_rows = shard_rows
        self.batch_rows = batch_rows
        self._checked = False

    def provider(self, name: str | None) -> EmbeddingProvider:
        """The local provider; the first call also checks that Ray is installed and its address answers."""
        chosen = self._providers(name or "local")
        if chosen.name != "local":
            raise InputError(f"the ray engine embeds with the local model only, not {chosen.name}; use provider local.")
        if not self._checked:
            from providers.ray_engine.connect import check_ray

            check_ray(self.address)
            self._checked = True
        return chosen

    def work_dir(self, job_id: str) -> Path:
        return self.settings.resolved_data_dir / "ray_jobs" / job_id

    async def run(
        self,
        job: EngineJob,
        chunks: Iterable[Chunk],
        writer: VectorWriter,
        tally: Tally,
        on_progress: Callable[[int], None],
    ) -> None:
        from providers.ray_engine import RayJobOptions, read_shards, run_ray_job

        space = self.provider(job.provider).space
        if space != job.space:  # e.g. queries of a prompted model: the actors embed documents
            raise InputError(f"the Ray engine embeds into {space}, not {job.space}: run this job in-process.")
        work = self.work_dir(job.id)
        ids = await anyio.to_thread.run_sync(_write_input, work, chunks)
        if not ids:
            return
        options = RayJobOptions(
            inputs=(str(work / "input.jsonl"),),
            output=work / "shards",
            address=self.address,
            actors=self.actors,
            shard_rows=job.window or self.shard_rows,
            batch_rows=self.batch_rows,
        )
        report = await _run_in_thread(
            lambda cancel, progress: run_ray_job(options, self.settings, progress=progress, cancel=cancel), on_progress
        )
        if report.space != job.space:
            raise EmbeddingError(
                f"Ray embedded into {report.space}, not the job's {job.space}: two spaces in one file."
            )
        _, vectors, dropped = await anyio.to_thread.run_sync(read_shards, options.output)
        if len(vectors) != len(ids):
            raise EmbeddingError(f"Ray wrote {len(vectors)} vectors for {len(ids)} chunks in {options.output}.")
        for start in range(0, len(ids), self.batch_rows):
            stop = min(start + self.batch_rows, len(ids))
            part = dropped[start:stop]
            await anyio.to_thread.run_sync(writer.write, ids[start:stop], np.asarray(vectors[start:stop]), part)
            tally.truncated += sum(1 for lost in part if lost)
            tally.dropped_tokens += sum(part)
        tally.embedded += report.embedded
        tally.cached += len(ids) - report.embedded
        tally.tokens += report.tokens
        on_progress(tally.written)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(work, ignore_errors=True))

    async def aclose(self) -> None:
        return None


def _write_input(work: Path, chunks: Iterable[Chunk]) -> list[str | int]:
    """The chunks as Ray's input (`{"id": row, "text"}` lines); their own ids, in order."""
    work.mkdir(parents=True, exist_ok=True)
    ids: list[str | int] = []
    temporary = work / "input.jsonl.partial"
    with temporary.open("w", encoding="utf-8") as stream:
        for chunk in chunks:
            stream.write(json.dumps({"id": len(ids), "text": chunk.text}) + "\n")
            ids.append(chunk.id)
    temporary.replace(work / "input.jsonl")
    return ids


async def _run_in_thread(
    job: Callable[[threading.Event, Callable[[int, int], None]], RayJobReport], on_progress: Callable[[int], None]
) -> RayJobReport:
    """Run `job(cancel, progress)` in a worker thread; cancelling this task sets `cancel` and waits for it to stop."""
    cancel = threading.Event()
    outcome: list[RayJobReport | BaseException] = []

    def progress(done: int, total: int) -> None:  # on the worker thread
        anyio.from_thread.run_sync(on_progress, done)

    def call() -> None:
        try:
            outcome.append(job(cancel, progress))
        except BaseException as exc:  # handed to the task: a task group would wrap it in a group
            outcome.append(exc)

    async def stop_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancel.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_when_cancelled)
        await anyio.to_thread.run_sync(call)  # not abandoned: Ray stops between batches, then this returns
        tasks.cancel_scope.cancel()
    result = outcome[0]
    if isinstance(result, BaseException):
        if cancel.is_set():
            await anyio.lowlevel.checkpoint()  # the task was cancelled: let that cancellation through
        if isinstance(result, Exception) and not isinstance(result, EmbeddingError):
            # Ray's own failures fail the job, not the process running it.
            raise EmbeddingError(f"the Ray job failed: {type(result).__name__}: {result}") from result
        raise result
    return result


def build_engine(
    settings: Settings,
    providers: Callable[[str | None], EmbeddingProvider],
    *,
    ray_address: str | None = None,
    actors: int | None = None,
    **_: object,
) -> RayJobEngine:
    """The engine `jobs.engine.build_engine("ray", ...)` finds by name."""
    return RayJobEngine(settings, providers, address=ray_address, actors=actors)
