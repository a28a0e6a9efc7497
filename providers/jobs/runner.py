"""Embedding jobs in the background: start, watch, cancel and resume; one at a time per provider.

```python
async with JobRunner(settings, AllowedRoots.from_env(os.environ, Path.cwd())) as runner:
    job, estimate = await runner.start("chunks.jsonl", "vectors.npy")
    await runner.wait(job.id)
    print(runner.status(job.id).status)   # "done"
```

Jobs are read, checked and priced before they are queued, so a bad input is refused at once.
A job runs through an engine (`jobs/engine.py`): the in-process one embeds with its own
`EmbeddingService` (fallback off, so one file holds one vector space; the local model on all
cores but one, so interactive calls keep a core). Interrupted jobs (the process died) do not
resume by themselves: `resume` runs them again, and the cache answers every chunk done before.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc
import anyio.to_thread

from providers.base import InputType, input_type_of
from providers.clients import as_client, current_client
from providers.cost import batch_cost_usd, cost_usd
from providers.errors import EmbeddingError, InputError
from providers.jobs.engine import ENGINES, EngineJob, InProcessEngine, JobEngine, build_engine, job_settings
from providers.jobs.files import Chunk, DuplicateIds, find_sources, read_chunks
from providers.jobs.paths import AllowedRoots
from providers.jobs.pipeline import Tally
from providers.jobs.store import JobRecord, JobStore
from providers.jobs.writers import JsonlWriter, NpyWriter, VectorWriter, ids_path
from providers.settings import Settings

__all__ = ["EngineJob", "InProcessEngine", "JobEngine", "JobRunner", "JobStart", "job_settings", "scan_chunks"]

OUTPUT_FORMATS = ("jsonl", "npy")


@dataclass(frozen=True)
class JobStart:
    """A job as queued, and what it is expected to cost."""

    job: JobRecord
    duplicate_ids: str | None
    """A warning when ids repeat in the input."""


@dataclass
class _Scan:
    total: int = 0
    estimated_tokens: int = 0
    fingerprint: str = ""
    duplicates: str | None = None


def scan_chunks(chunks: Iterable[Chunk]) -> tuple[int, int, DuplicateIds]:
    """Count chunks and estimated tokens (about 3 bytes a token, erring high) and find repeated ids."""
    total = tokens = 0
    duplicates = DuplicateIds()
    for chunk in chunks:
        total += 1
        tokens += len(chunk.text.encode()) // 3 + 1
        duplicates.add(chunk.id)
    return total, tokens, duplicates


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
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.roots = roots
        self.engine: JobEngine = engine or InProcessEngine(job_settings(settings))
        self._engines: dict[str, JobEngine] = {"in-process": self.engine, **(engines or {})}
        self.store = store or JobStore(settings.resolved_data_dir / "jobs.sqlite3")
        self._heartbeat_s = heartbeat_s
        self._progress_every_s = progress_every_s
        self._now = now
        self._queues: dict[str, deque[str]] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._finished: dict[str, anyio.Event] = {}
        self._tasks: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> JobRunner:
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._heartbeat)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()  # running jobs end as interrupted: resume_job goes on
        try:
            return await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                for engine in self._engines.values():
                    await engine.aclose()
                self.store.close()

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
        input_type: InputType = "document",
    ) -> JobStart:
        """Check, count and price the job, then queue it; answers before any embedding."""
        roots = roots or self.roots
        source = roots.check_input(input)
        target = roots.check_output(output, [source])
        out_format = format or ("npy" if target.suffix.lower() == ".npy" else "jsonl")
        if out_format not in OUTPUT_FORMATS:
            raise InputError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, not {format!r}.")
        if out_format == "npy":
            roots.check_output(str(ids_path(target)), [source])
        chosen = self.engine_named(engine).provider(provider)
        await chosen.resolve_space()  # the job's space must be final (a compatible server's length)
        scan = await anyio.to_thread.run_sync(self._scan, str(source), glob, target, out_format, roots)
        job = self.store.create(
            input=str(source),
            output=str(target),
            format=out_format,
            glob=glob,
            provider=chosen.name,
            model=chosen.model,
            space=chosen.space_for(input_type),  # also what a resume embeds as (`input_type_of`)
            fingerprint=scan.fingerprint,
            total=scan.total,
            estimated_tokens=scan.estimated_tokens,
            estimated_usd=estimate_usd(
                chosen.name, chosen.model, scan.estimated_tokens, self.settings, batch=engine == "batch-api"
            ),
            engine=engine,
        )
        if scan.duplicates:
            self.store.add_error(job.id, scan.duplicates)
        self._enqueue(job)
        return JobStart(self.status(job.id), scan.duplicates)

    def status(self, job_id: str) -> JobRecord:
        job, caller = self.store.get(job_id), current_client()
        # An HTTP client reaches only its own jobs; another's is answered as if it did not exist.
        if job is None or (caller is not None and job.client != caller):
            raise InputError(f"no job {job_id!r}; list_jobs shows the known jobs.")
        return job

    def list(self, limit: int = 20) -> list[JobRecord]:
        return self.store.list(limit)

    async def cancel(self, job_id: str) -> JobRecord:
        """Stop the job: at once here; within a heartbeat when another process runs it.

        Nothing more is sent after this returns; the answer waits up to a second for the job to
        wind down (a model still loading finishes loading first, and is then told to stop).
        """
        job = self.status(job_id)
        if job.status in ("done", "failed", "cancelled"):
            return job
        self.store.request_cancel(job_id)
        scope = self._scopes.get(job_id)
        if scope is not None:  # its run cancels what the engine started remotely
            scope.cancel()
            with anyio.move_on_after(1.0):
                await self._finished[job_id].wait()
        elif job.status != "running":  # no one runs it: stop what an earlier run left running remotely
            await self._cancel_remote(job)
        return self.status(job_id)

    def engine_named(self, name: str) -> JobEngine:
        """The engine of that name (`ENGINES`), built on first use with the in-process engine's providers."""
        if name not in self._engines:
            if name not in ENGINES:
                raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}.")
            self._engines[name] = build_engine(name, job_settings(self.settings), self.engine.provider)
        return self._engines[name]

    def engine_status(self, job: JobRecord) -> dict[str, object] | None:
        """What the job's engine reports beyond the counts: a Batch API job's batches (no remote call)."""
        status = getattr(self.engine_named(job.engine), "status", None) if job.engine == "batch-api" else None
        found = status(job.id, job.model) if status is not None else None
        if found is None:
            return None
        from providers.batch_api.job_engine import batch_summary

        return batch_summary(found)

    async def _cancel_remote(self, job: JobRecord) -> None:
        if job.engine != "batch-api":
            return
        cancel = getattr(self.engine_named(job.engine), "cancel", None)
        if cancel is not None:
            with anyio.CancelScope(shield=True):
                await cancel(job.id, job.model)

    async def resume(self, job_id: str, roots: AllowedRoots | None = None) -> JobRecord:
        """Run a stopped job again; the cache answers every chunk done before, so only the rest is sent."""
        job = self.status(job_id)
        if job.status == "done":
            return job
        roots = roots or self.roots
        source = roots.check_input(job.input)
        roots.check_output(job.output, [source])
        excluded = output_files(Path(job.output), job.format)
        now = await anyio.to_thread.run_sync(fingerprint, job.input, job.glob, excluded)
        if now != job.fingerprint:
            raise InputError(f"the input of job {job_id} changed since it started; start a new job for it.")
        if not self.store.requeue(job_id):
            raise InputError(f"job {job_id} is {job.status} in another live process; it cannot run twice.")
        self._enqueue(self.status(job_id))
        return self.status(job_id)

    async def wait(self, job_id: str) -> JobRecord:
        """The job once this process has finished with it (for callers that want to block)."""
        event = self._finished.get(job_id)
        if event is not None:
            await event.wait()
        return self.status(job_id)

    # --- running -----------------------------------------------------------------------------------

    def _enqueue(self, job: JobRecord) -> None:
        assert self._tasks is not None, "use JobRunner as an async context manager"
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
        if job.status == "cancelled" or not self.store.claim(job_id):
            return
        job = self.status(job_id)
        tally = Tally()
        paid_tokens, paid_usd = job.tokens, job.usd
        last_saved = 0.0

        def save(*, force: bool = False) -> None:
            nonlocal last_saved
            now = self._now()
            if not force and now - last_saved < self._progress_every_s:
                return
            last_saved = now
            self.store.progress(
                job_id,
                done=tally.written,
                cached=tally.cached,
                tokens=paid_tokens + tally.tokens,
                usd=paid_usd + tally.usd,
                truncated=tally.truncated,
                dropped_tokens=tally.dropped_tokens,
            )

        scope = self._scopes[job_id] = anyio.CancelScope()
        writer: VectorWriter | None = None
        status, error, committed = "done", None, False
        try:
            with scope:
                writer = await anyio.to_thread.run_sync(self._writer, job)
                engine_job = EngineJob(job.id, job.provider, job.space, input_type=input_type_of(job.space))
                # `done` counts rows written, each already cached: after a kill it never claims more.
                engine = self.engine_named(job.engine)
                await engine.run(engine_job, self._chunks(job), writer, tally, lambda _: save())
                await anyio.to_thread.run_sync(writer.commit)
                writer, committed = None, True
            if scope.cancelled_caught and not committed:  # a cancel during the commit came too late
                status = "cancelled"
                await self._cancel_remote(job)
        except EmbeddingError as exc:
            status, error = "failed", str(exc)
        except OSError as exc:
            status, error = "failed", f"cannot write {job.output}: {exc}"
        except BaseException:  # this process is shutting down: the job is left to resume
            status = "interrupted"
            raise
        finally:
            del self._scopes[job_id]
            with anyio.CancelScope(shield=True):
                if writer is not None:
                    await anyio.to_thread.run_sync(writer.discard)
                save(force=True)
                if tally.failed:
                    self.store.add_error(job_id, f"{tally.failed:,} chunks got no vector (their requests failed)")
                if tally.truncated:
                    self.store.add_error(
                        job_id,
                        f"{tally.truncated:,} chunks were longer than the model's window and were cut "
                        f"({tally.dropped_tokens:,} tokens unseen; see truncated/dropped_tokens in the output rows)",
                    )
                self.store.finish(job_id, status, error)  # type: ignore[arg-type]

    async def _heartbeat(self) -> None:
        while True:
            # On this thread, like every use of the store: its one connection is never used by two at once.
            # An idle server does not write to it.
            for job_id in self.store.heartbeat() if self._queues else ():
                scope = self._scopes.get(job_id)
                if scope is not None:
                    scope.cancel()
            await anyio.sleep(self._heartbeat_s)

    def _writer(self, job: JobRecord) -> VectorWriter:
        output = Path(job.output)
        if job.format == "npy":
            return NpyWriter(output, self.engine.provider(job.provider).dimensions)
        return JsonlWriter(output, job.space)

    def _chunks(self, job: JobRecord) -> Iterator[Chunk]:
        # Read with the server's roots: a resumed job may not reach further than a new one.
        for item in self._items(job.input, job.glob, Path(job.output), job.format, self.roots):
            if not isinstance(item, Chunk):
                raise InputError(f"{item}. Fix it and start the job again.")
            yield item

    def _items(self, source: str, glob: str, output: Path, out_format: str, roots: AllowedRoots) -> Iterator[object]:
        excluded = output_files(output, out_format)
        for found in find_sources([source], "auto", glob, excluded, roots.check_file):
            yield from read_chunks(found, self.settings.limits)

    def _scan(self, source: str, glob: str, output: Path, out_format: str, roots: AllowedRoots) -> _Scan:
        def valid() -> Iterator[Chunk]:
            for item in self._items(source, glob, output, out_format, roots):
                if not isinstance(item, Chunk):
                    raise InputError(f"{item}. Fix it and start the job again.")
                yield item

        total, tokens, duplicates = scan_chunks(valid())
        try:
            repeated = duplicates.describe() if duplicates.count else None
        finally:
            duplicates.close()
        return _Scan(total, tokens, fingerprint(source, glob, output_files(output, out_format)), repeated)


def output_files(output: Path, out_format: str) -> frozenset[Path]:
    """The files a job writes, which it never reads even when they lie in its input directory."""
    files = [output, ids_path(output)] if out_format == "npy" else [output]
    return frozenset([*files, *(f.with_name(f.name + ".partial") for f in files)])


def fingerprint(source: str, glob: str, excluded: frozenset[Path]) -> str:
    """Each input file's path, size and modification time: a changed input is a new job."""
    digest = hashlib.sha256()
    for found in find_sources([source], "auto", glob, excluded):
        if found.path is not None:
            info = found.path.stat()
            digest.update(json.dumps([str(found.path), info.st_size, info.st_mtime_ns]).encode())
    return digest.hexdigest()


def estimate_usd(provider: str, model: str, tokens: int, settings: Settings, *, batch: bool = False) -> float | None:
    """What `tokens` cost synchronously, or through the Batch API (`batch`: OpenAI only, half price)."""
    return (batch_cost_usd if batch else cost_usd)(provider, model, tokens, settings)
