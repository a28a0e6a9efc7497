"""Embedding jobs in the background: start, watch, cancel and resume; one at a time per provider.

```python
async with JobRunner(settings, AllowedRoots.from_env(os.environ, Path.cwd())) as runner:
    job, estimate = await runner.start("chunks.jsonl", "vectors.npy")
    await runner.wait(job.id)
    print(runner.status(job.id).status)   # "done"
```

Jobs are checked and priced before they are queued. An engine (`jobs/engine.py`) runs them. An
interrupted job (its process died, or `checkpoint_all` stopped it to exit) runs again by `resume`,
going on after the rows its `.partial` kept (`jobs/continuing.py`); a free provider's resumes by
itself when the next runner starts on the data directory. The job store is used from worker threads
only: a database locked or full never stops the event loop, and fails only the job it hurts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from providers.base import InputType, input_type_of
from providers.clients import as_client, current_client
from providers.errors import EmbeddingError, InputError, StorageError
from providers.jobs.continuing import open_output
from providers.jobs.engine import EngineJob, InProcessEngine, JobEngine, job_settings
from providers.jobs.free_resume import resume_free_jobs, resumes_by_itself
from providers.jobs.input_checks import estimate_usd, fingerprint, output_files
from providers.jobs.inputs import JobInputs
from providers.jobs.paths import AllowedRoots
from providers.jobs.pipeline import Tally
from providers.jobs.repository import JobOptions
from providers.jobs.runner_engines import RunnerEngines
from providers.jobs.saving import ProgressSaver, record_end
from providers.jobs.scan import DryRun, scan_input
from providers.jobs.store import JobRecord, JobStatus, JobStore, describe_owner
from providers.jobs.target import check_target, commit_output
from providers.jobs.writers import VectorWriter
from providers.settings import Settings
from providers.storage.sqlite import storage_error

__all__ = ["DryRun", "JobRunner", "JobStart", "estimate_usd"]

OUTPUT_FORMATS = ("jsonl", "npy")
logger = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class JobStart:
    """A job as queued, and what it is expected to cost."""

    job: JobRecord
    duplicate_ids: str | None
    """A warning when ids repeat in the input."""


class JobRunner:
    """Queues jobs per provider and runs them in the background of this process."""

    def __init__(
        self,
        settings: Settings,
        roots: AllowedRoots,
        *,
        engine: JobEngine | None = None,
        engines: dict[str, JobEngine] | None = None,
        store: JobStore | None = None,
        heartbeat_s: float = 0.5,
        progress_every_s: float = 0.5,
        finish_within_s: float = 70.0,
        resume_free: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.roots = roots
        self.engine: JobEngine = engine or InProcessEngine(job_settings(settings))
        self.engines = RunnerEngines(settings, self.engine, engines)
        self.store = store or JobStore(settings.resolved_data_dir / "jobs.sqlite3")
        self.inputs = JobInputs(settings, lambda engine, name: self.engine_named(engine).provider(name))
        self._heartbeat_s = heartbeat_s
        self._progress_every_s = progress_every_s
        self._finish_within_s = finish_within_s  # for a locked store: two busy timeouts
        self._resume_free = resume_free
        self._now = now
        self._queues: dict[str, deque[str]] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._finished: dict[str, anyio.Event] = {}
        self._tasks: anyio.abc.TaskGroup | None = None
        self._stopping = False
        self._resumed: set[str] = set()

    async def __aenter__(self) -> JobRunner:
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._heartbeat)
        if self._resume_free:
            self._tasks.start_soon(self.resume_free_jobs)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tasks is not None
        with anyio.CancelScope(shield=True):
            await self.checkpoint_all()
        self._tasks.cancel_scope.cancel()
        try:
            return await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await self.engines.aclose()
                self.store.close()

    async def checkpoint_all(self, within_s: float = 2.0) -> None:
        """For a clean exit: stop every job here, left `interrupted` with its progress (waits up to `within_s`)."""
        self._stopping = True
        queued = [queue.popleft() for queue in self._queues.values() for _ in range(len(queue))]
        for job_id in queued:
            with contextlib.suppress(StorageError):  # else its lease runs out: it shows interrupted all the same
                await self._in_thread(self.store.finish, job_id, "interrupted")
            self._finished[job_id].set()
        for scope in self._scopes.values():
            scope.cancel()
        with anyio.move_on_after(within_s):
            for job_id in list(self._scopes):
                await self._finished[job_id].wait()

    # --- the operations ----------------------------------------------------------------------------

    async def start(
        self,
        input: str,
        output: str,
        *,
        provider: str | None = None,
        format: str | None = None,
        glob: str = "*",
        roots: AllowedRoots | None = None,
        engine: str = "in-process",
        options: JobOptions | None = None,
        overwrite: bool = False,
        input_type: InputType = "document",
    ) -> JobStart:
        """Check, count and price the job, then queue it; answers before any embedding.

        `overwrite`: the output may replace a job's output already there (never another file). A
        rerun onto the output of an earlier run of the same input (a file-tree job's incremental
        run) may replace it without: it is that job's own output.
        """
        options = options or JobOptions.from_column(glob)
        roots = roots or self.roots
        source = roots.check_input(input)
        target = roots.resolve(output)
        out_format = format or ("npy" if target.suffix.lower() == ".npy" else "jsonl")
        if out_format not in OUTPUT_FORMATS:
            raise InputError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, not {format!r}.")
        chosen = self.engine_named(engine).provider(provider)
        await chosen.resolve_space()  # the job's space must be final (a compatible server's length)
        column, space = options.to_column(), chosen.space_for(input_type)
        job_input = await anyio.to_thread.run_sync(
            self.inputs.open, str(source), target, out_format, column, chosen.name, engine, roots, space
        )
        rerun = job_input.run.previous is not None and bool(job_input.run.previous.files)  # its own output
        target = self._check_output(roots, output, source, out_format, overwrite or rerun)
        scan = await anyio.to_thread.run_sync(self.inputs.scan, job_input)
        found = await anyio.to_thread.run_sync(fingerprint, str(source), column, output_files(target, out_format))
        job = await self._in_thread(
            functools.partial(
                self.store.create,
                input=str(source),
                output=str(target),
                format=out_format,
                glob=column,
                provider=chosen.name,
                model=chosen.model,
                space=space,  # also what a resume embeds as (`input_type_of`)
                fingerprint=found,
                total=scan.totals.chunks,
                estimated_tokens=scan.totals.tokens,
                estimated_usd=estimate_usd(
                    chosen.name, chosen.model, scan.totals.tokens, self.settings, batch=engine == "batch-api"
                ),
                engine=engine,
                overwrite=int(overwrite or rerun),
            )
        )
        if scan.duplicates:
            await self._in_thread(self.store.add_error, job.id, scan.duplicates)
        await anyio.to_thread.run_sync(self.inputs.save_changes, job.id, job_input)
        self._enqueue(job)
        return JobStart(self.status(job.id), scan.duplicates)

    async def dry_run(
        self, input: str, output: str, *, provider: str | None = None, roots: AllowedRoots | None = None,
        engine: str = "in-process", options: JobOptions | None = None,
    ) -> DryRun:  # fmt: skip
        """What `start` would embed and cost: read, not queued, nothing sent (the output is only compared with)."""
        roots = roots or self.roots
        source, target = roots.check_input(input), roots.resolve(output)
        chosen = self.engine_named(engine).provider(provider)
        fmt = "npy" if target.suffix.lower() == ".npy" else "jsonl"
        column = (options or JobOptions()).to_column()
        job_input = self.inputs.open(str(source), target, fmt, column, chosen.name, engine, roots)
        scan = await anyio.to_thread.run_sync(scan_input, job_input, self.settings.limits)
        return DryRun(scan.totals, job_input, chosen.name, chosen.model, chosen.space, job_input.budget)

    def changes(self, job_id: str) -> dict[str, object] | None:
        """What a file-tree job found changed since the last run to its output (None: not a file-tree job)."""
        return self.inputs.saved_changes(job_id)

    def status(self, job_id: str) -> JobRecord:
        job, caller = self.store.get(job_id), current_client()
        # An HTTP client reaches only its own jobs; another's is answered as if it did not exist.
        if job is None or (caller is not None and job.client != caller):
            raise InputError(f"no job {job_id!r}; list_jobs shows the known jobs.")
        return job

    def list(self, limit: int = 20) -> list[JobRecord]:
        return self.store.list(limit)

    def resumes_by_itself(self, job: JobRecord) -> bool:
        return resumes_by_itself(job, self.settings)

    async def cancel(self, job_id: str) -> JobRecord:
        """Stop the job: at once here; within a heartbeat when another process runs it.

        Nothing more is sent after this returns; the answer waits up to a second for the job to
        wind down (a model still loading finishes loading first, and is then told to stop).
        """
        job = self.status(job_id)
        if job.status in ("done", "failed", "cancelled"):
            return job
        await self._in_thread(self.store.request_cancel, job_id)
        scope = self._scopes.get(job_id)
        if scope is not None:  # its run cancels what the engine started remotely
            scope.cancel()
            with anyio.move_on_after(1.0):
                await self._finished[job_id].wait()
        elif job.status != "running":  # no one runs it: stop what an earlier run left running remotely
            await self.engines.cancel_remote(job)
        return self.status(job_id)

    def engine_named(self, name: str) -> JobEngine:
        return self.engines.named(name)

    def engine_status(self, job: JobRecord) -> dict[str, object] | None:
        return self.engines.status(job)

    async def resume(self, job_id: str, roots: AllowedRoots | None = None) -> JobRecord:
        """Run a stopped job again, after the rows its `.partial` kept; the cache answers the rest it did."""
        job = self.status(job_id)
        if job.status == "done":
            return job
        roots = roots or self.roots
        source = roots.check_input(job.input)
        # Its output may be there from its own earlier run: a job's output (never another file) is replaced.
        self._check_output(roots, job.output, source, job.format, True)
        excluded = output_files(Path(job.output), job.format)
        now = await anyio.to_thread.run_sync(fingerprint, job.input, job.glob, excluded)
        if now != job.fingerprint:
            raise InputError(f"the input of job {job_id} changed since it started; start a new job for it.")
        if not await self._in_thread(self.store.requeue, job_id):
            holder = describe_owner(self.status(job_id).owner)
            raise InputError(
                f"job {job_id} is already taken by another server ({holder}): a job runs in one server at a time. "
                "Follow it with job_status, or cancel_job it there first."
            )
        self._resumed.add(job_id)
        self._enqueue(self.status(job_id))
        return self.status(job_id)

    async def resume_free_jobs(self) -> tuple[str, ...]:
        """Resume interrupted free jobs (as the runner starts); one that cannot is logged. The ids resumed."""
        return await resume_free_jobs(self.store, self.settings, self.resume)

    async def wait(self, job_id: str) -> JobRecord:
        """The job once this process has finished with it (for callers that want to block)."""
        event = self._finished.get(job_id)
        if event is not None:
            await event.wait()
        return self.status(job_id)

    # --- running -----------------------------------------------------------------------------------

    def _check_output(self, roots: AllowedRoots, output: str, source: Path, out_format: str, overwrite: bool) -> Path:
        return check_target(roots, output, source, out_format, overwrite, self.settings.resolved_data_dir)

    async def _in_thread(self, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`call` (a job store method) in a worker thread: a lock held elsewhere never blocks the event loop."""
        return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))

    def _enqueue(self, job: JobRecord) -> None:
        assert self._tasks is not None, "use JobRunner as an async context manager"
        if self._stopping:
            raise InputError("this server is stopping; start or resume the job in the next one.")
        self._finished[job.id] = anyio.Event()
        queue = self._queues.get(job.provider)
        if queue is not None:
            queue.append(job.id)
            return
        self._queues[job.provider] = deque([job.id])
        self._tasks.start_soon(self._work, job.provider)

    async def _work(self, provider: str) -> None:
        queue = self._queues[provider]
        try:
            while queue:
                job_id = queue.popleft()
                try:
                    record = self.store.get(job_id)  # each job runs, and is billed, as the client that owns it
                    with as_client(record.client if record else None):
                        await self._run(job_id)
                finally:
                    self._finished[job_id].set()
        finally:
            del self._queues[provider]

    async def _run(self, job_id: str) -> None:
        job = self.status(job_id)
        # An earlier run may have kept rows in the `.partial`; other engines keep state of their own.
        continuing = job.engine == "in-process" and await self._in_thread(self.store.wrote_last, job)
        if job.status == "cancelled" or not await self._in_thread(self.store.claim, job_id):
            return
        job = self.status(job_id)
        tally = Tally()
        assert self._tasks is not None
        saver = ProgressSaver(self.store, job, tally, self._tasks, every_s=self._progress_every_s, now=self._now)
        scope = self._scopes[job_id] = anyio.CancelScope()
        writer: VectorWriter | None = None
        status: JobStatus = "done"
        error, committed = None, False
        try:
            with scope:
                dimensions = self.engine.provider(job.provider).dimensions
                opened = functools.partial(open_output, self.inputs, job, self.roots, dimensions, continuing=continuing)
                output = await anyio.to_thread.run_sync(opened, tally)
                writer, job_input = output.writer, output.job_input
                saver.poke()  # rows kept from a stopped run show at once
                engine_job = EngineJob(job.id, job.provider, job.space, input_type=input_type_of(job.space))
                engine = self.engine_named(job.engine)  # `done` counts rows written: after a kill it never claims more
                await engine.run(engine_job, output.chunks, writer, tally, lambda _: saver.poke())
                data_dir = self.settings.resolved_data_dir
                mine = bool(job.overwrite) or job_id in self._resumed  # a resumed job replaces its earlier output
                await anyio.to_thread.run_sync(commit_output, job, writer, self.roots, data_dir, mine)
                writer, committed = None, True
                await anyio.to_thread.run_sync(job_input.commit)
                self.inputs.save_changes(job.id, job_input)
            if scope.cancelled_caught and not committed:  # a cancel during the commit came too late
                status = "interrupted" if self._stopping else "cancelled"
                if status == "cancelled":
                    await self.engines.cancel_remote(job)
        except EmbeddingError as exc:
            status, error = "failed", str(exc)
        except OSError as exc:
            status, error = "failed", f"cannot write {job.output}: {exc}"
        except sqlite3.Error as exc:  # the ledger or the cache: the job fails, the server goes on
            status, error = "failed", str(storage_error(exc, "cost ledger or vector cache"))
        except Exception as exc:  # a bug: this job fails, the server and its other jobs go on
            logger.exception("job %s failed", job_id)
            status, error = "failed", f"unexpected {type(exc).__name__}: {exc}; resume_job tries again"
        except BaseException:  # this process is shutting down: the job is left to resume
            status = "interrupted"
            raise
        finally:
            del self._scopes[job_id]
            with anyio.CancelScope(shield=True):
                if writer is not None:  # a stop keeps what was done, for a resume to go on from
                    kept = status == "interrupted" and job.engine == "in-process" and tally.written > 0
                    await anyio.to_thread.run_sync(writer.keep_partial if kept else writer.discard)
                await record_end(saver, status, error, within_s=self._finish_within_s)

    async def _heartbeat(self) -> None:
        while True:
            # An idle server does not write to the store.
            if self._queues:
                try:
                    cancels = await anyio.to_thread.run_sync(self.store.heartbeat, abandon_on_cancel=True)
                except StorageError as exc:  # the leases run on; the next beat tries again
                    logger.warning("the leases of this server's jobs were not renewed: %s", exc)
                    cancels = set()
                for job_id in cancels:
                    scope = self._scopes.get(job_id)
                    if scope is not None:
                        scope.cancel()
            await anyio.sleep(self._heartbeat_s)
