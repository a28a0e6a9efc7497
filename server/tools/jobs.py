"""The MCP job tools: start_embedding_job, job_status, cancel_job, list_jobs, resume_job.

Registered with one call, `register_job_tools(mcp)`; the runner lives beside the service for the
server's lifetime (`run_jobs` in the lifespan). Files are checked against the allowed roots
(`SIGNAL_HUB_JOB_ROOTS`, else the working directory), narrowed by the client's MCP roots when it
offers them (roots are deprecated in the protocol, so nothing depends on them).
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

import anyio
from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ClientCapabilities, RootsCapability, TextContent
from pydantic import BaseModel, Field

from providers import EmbeddingError, EmbeddingService, Settings
from providers.chunking.selection import FileFilter
from providers.jobs.paths import AllowedRoots
from providers.jobs.repository import JobOptions
from providers.jobs.runner import JobRunner, estimate_usd
from providers.jobs.store import JobRecord, JobStatus
from server.tools.budget import fit_items
from server.tools.registration import add_tool
from server.wording import count, format_usd

__all__ = [
    "JobListResult",
    "JobStarted",
    "JobStatusResult",
    "checkpoint_jobs",
    "register_job_tools",
    "run_jobs",
    "runner_of",
]

_RUNNERS: weakref.WeakKeyDictionary[EmbeddingService, JobRunner] = weakref.WeakKeyDictionary()
_ROOTS_TIMEOUT_S = 2.0


@asynccontextmanager
async def run_jobs(service: EmbeddingService, settings: Settings) -> AsyncIterator[JobRunner]:
    """Run jobs in the background for as long as the server runs (one line in the lifespan)."""
    roots = AllowedRoots.from_env(os.environ, Path.cwd())
    async with JobRunner(settings, roots) as runner:
        _RUNNERS[service] = runner
        try:
            yield runner
        finally:
            _RUNNERS.pop(service, None)


async def checkpoint_jobs(service: EmbeddingService, within_s: float = 2.0) -> None:
    """For a clean exit: leave this server's jobs `interrupted`, their progress saved (`JobRunner.checkpoint_all`)."""
    runner = _RUNNERS.get(service)
    if runner is not None:
        await runner.checkpoint_all(within_s)


def runner_of(service: EmbeddingService) -> JobRunner | None:
    """The job runner serving beside `service`, while the server runs (for the HTTP server's metrics)."""
    return _RUNNERS.get(service)


class JobStatusResult(BaseModel):
    job_id: str
    status: JobStatus
    done: int
    total: int
    cached: int
    tokens: int
    usd: float
    rate_per_min: float
    eta_s: float | None
    errors: list[str]
    truncated: int
    engine: str = "in-process"
    batches: dict[str, Any] | None = None
    """A batch-api job: its remote batches (each while few, else counts by status) and request counts."""
    next_step: str | None = None
    """An interrupted job: whether it resumes by itself (a free provider) or waits for resume_job."""
    changes: dict[str, Any] | None = None
    """A directory or source-file job: files and chunks added, changed, removed, unchanged since the
    last run to its output, and files skipped by reason."""


class JobStarted(JobStatusResult):
    """What start_embedding_job answers: the status, where the vectors go, and the estimate."""

    output: str
    space: str
    estimated_tokens: int
    estimated_usd: float | None
    """At the price of the job's engine (the Batch API's for batch-api)."""
    sync_usd: float | None = None
    """OpenAI only: the estimate at the synchronous price..."""
    batch_usd: float | None = None
    """...and through the Batch API (half of it)."""


class JobListResult(BaseModel):
    jobs: list[JobStatusResult]
    more: str | None = None
    """When the jobs' errors make the list too long: how many newest-first jobs were left out."""


def _status(
    job: JobRecord,
    batches: dict[str, Any] | None = None,
    runner: JobRunner | None = None,
    changes: dict[str, Any] | None = None,
) -> JobStatusResult:
    now = time.time()
    eta = job.eta_s(now)
    next_step = None
    if job.status == "interrupted" and runner is not None:
        next_step = (
            "resumes by itself when a server starts (free provider), or now with resume_job"
            if runner.resumes_by_itself(job)
            else "waits for resume_job (a paid provider's job never resumes by itself)"
        )
    return JobStatusResult(
        job_id=job.id,
        status=job.status,
        done=job.done,
        total=job.total,
        cached=job.cached,
        tokens=job.tokens,
        usd=round(job.usd, 6),
        rate_per_min=round(job.rate_per_min(now), 1),
        eta_s=None if eta is None else round(eta, 1),
        errors=[error[:300] for error in job.error_list],
        truncated=job.truncated,
        engine=job.engine,
        batches=batches,
        next_step=next_step,
        changes=changes,
    )


def _batches(runner: JobRunner, job: JobRecord) -> dict[str, Any] | None:
    try:
        return runner.engine_status(job)
    except EmbeddingError:  # e.g. the key is gone: the counts still answer
        return None


def _line(job: JobStatusResult) -> str:
    text = f"Job {job.job_id}: {job.status}, {job.done:,}/{count(job.total, 'chunk')} ({job.cached:,} cached), "
    text += format_usd(job.usd)
    if job.eta_s is not None:
        text += f", about {job.eta_s:.0f} s left"
    if job.batches is not None:
        listed = job.batches["batches_by_status"]
        text += f"; {sum(listed.values())} batch(es): " + ", ".join(f"{n} {state}" for state, n in listed.items())
    if job.next_step is not None:
        text += f"; it {job.next_step}"
    return text + "."


def _answer(out: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=out.model_dump())


def _runner(ctx: Context) -> JobRunner:
    service = ctx.request_context.lifespan_context
    runner = _RUNNERS.get(service) if isinstance(service, EmbeddingService) else None
    if runner is None:  # pragma: no cover - the lifespan always starts one
        raise ToolError("jobs are not available in this server.")
    return runner


async def _roots(ctx: Context, runner: JobRunner) -> AllowedRoots:
    """The server's roots, narrowed by the client's MCP roots when it offers them."""
    session = ctx.session
    if not session.check_client_capability(ClientCapabilities(roots=RootsCapability())):
        return runner.roots
    try:
        with warnings.catch_warnings(), anyio.fail_after(_ROOTS_TIMEOUT_S):
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            listed = await session.list_roots()
    except Exception:  # roots are a courtesy of the client: without them the server's roots stand
        return runner.roots
    paths = [Path(unquote(urlparse(str(root.uri)).path)) for root in listed.roots if str(root.uri).startswith("file:")]
    return runner.roots.narrowed(paths) if paths else runner.roots


async def _call(action: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await action()
    except EmbeddingError as exc:
        raise ToolError(str(exc)) from exc
    except OSError as exc:  # e.g. a file that vanished while the input was read
        raise ToolError(f"{exc.filename or 'a file'}: {exc.strerror or exc}; check the path and try again.") from exc


def register_job_tools(mcp: MCPServer[Any]) -> None:
    """Add the five job tools to `mcp`. Only job_status declares an output schema: tools/list stays small."""
    add_tool(mcp, start_embedding_job, title="Start an embedding job", idempotent=False, open_world=True)
    add_tool(mcp, job_status, title="Job status", read_only=True)
    add_tool(mcp, cancel_job, title="Cancel a job")
    add_tool(mcp, list_jobs, title="List jobs", read_only=True)
    add_tool(mcp, resume_job, title="Resume a job", open_world=True)


JobId = Annotated[str, Field(description="From start_embedding_job or list_jobs.")]
Patterns = Annotated[list[str] | None, Field(description="gitignore patterns, e.g. *.py")]


async def start_embedding_job(
    input: Annotated[str, Field(description="{id, text} .jsonl, text file, or directory")],
    output: Annotated[str, Field(description=".jsonl or .npy")],
    ctx: Context,
    provider: Literal["local", "openai"] | None = None,
    format: Literal["jsonl", "npy"] | None = None,
    engine: Annotated[
        Literal["in-process", "batch-api", "ray"], Field(description="batch-api: OpenAI, half price, <=24 h")
    ] = "in-process",
    overwrite: Annotated[bool, Field(description="Replace an earlier job's output there (never other files)")] = False,
    input_type: Literal["document", "query"] = "document",
    glob: Patterns = None,
    exclude: Patterns = None,
    dry_run: Annotated[bool, Field(description="report files, chunks, tokens, cost; send nothing")] = False,
    chunk_tokens: int | None = None,
) -> CallToolResult:
    """Embed a file or directory into a file in the background, for more than a call can carry.
    Directories: the files git would track, chunked by syntax. Answers at once with job_id and
    estimated tokens/USD; poll job_status. A rerun to the same output embeds only what changed."""
    runner = _runner(ctx)
    roots = await _roots(ctx, runner)
    options = JobOptions(FileFilter(_patterns(glob), _patterns(exclude)), chunk_tokens)
    if dry_run:
        found = await _call(
            lambda: runner.dry_run(input, output, provider=provider, roots=roots, engine=engine, options=options)
        )
        return _dry_run_answer(found.report(runner.settings))
    started = await _call(
        lambda: runner.start(
            input,
            output,
            provider=provider,
            format=format,
            roots=roots,
            engine=engine,
            options=options,
            overwrite=overwrite,
            input_type=input_type,
        )
    )
    job = started.job
    fields: dict[str, Any] = {"output": job.output, "space": job.space, "estimated_usd": job.estimated_usd}
    fields |= _prices(runner, job)
    out = JobStarted(
        **vars(_status(job, changes=runner.changes(job.id))), estimated_tokens=job.estimated_tokens, **fields
    )
    usd = "price unknown" if out.estimated_usd is None else format_usd(out.estimated_usd)
    text = f"Started job {out.job_id} ({engine}): {count(out.total, 'chunk')}, about "
    text += f"{count(out.estimated_tokens, 'token')}, {usd}"
    if out.sync_usd is not None and out.batch_usd is not None:
        text += f" (synchronous {format_usd(out.sync_usd)}, Batch API {format_usd(out.batch_usd)})"
    text += "."
    if started.duplicate_ids:
        text += f" Warning: {started.duplicate_ids}."
    if out.changes is not None:
        text += " " + _changes_text(out.changes)
    return _answer(out, text)


async def job_status(job_id: JobId, ctx: Context) -> CallToolResult:
    """Progress of an embedding job: status, done/total, cached, tokens, usd, rate, ETA, errors.
    Poll it after start_embedding_job or resume_job."""
    runner = _runner(ctx)
    job = await _call(lambda: _async(runner.status, job_id))
    out = _status(job, _batches(runner, job), runner, runner.changes(job_id))
    text = _line(out) if out.changes is None else f"{_line(out)} {_changes_text(out.changes)}"
    return _answer(out, text)


async def cancel_job(job_id: JobId, ctx: Context) -> CallToolResult:
    """Stop a job within a second. Work done stays cached and paid for;
    resume_job goes on from there."""
    runner = _runner(ctx)
    job = await _call(lambda: runner.cancel(job_id))
    out = _status(job, _batches(runner, job))
    return _answer(out, _line(out))


async def list_jobs(ctx: Context) -> CallToolResult:
    """The 10 newest embedding jobs with their progress, as job_status shows each.
    Use it to find a job_id."""
    runner = _runner(ctx)
    jobs = [_status(job, runner=runner) for job in runner.list(10)]

    def first(count: int) -> dict[str, Any]:
        left = len(jobs) - count
        more = f"and {left} older job(s) not shown: job_status shows each." if left else None
        return JobListResult(jobs=jobs[:count], more=more).model_dump()

    # Each job may carry five provider errors: cut whole jobs, as every list answer is.
    structured = await anyio.to_thread.run_sync(fit_items, first, len(jobs))
    shown = jobs[: len(structured["jobs"])]
    text = " ".join(_line(job) for job in shown) or "No jobs yet."  # each line ends with "."
    if structured["more"]:
        text += f" {structured['more'][0].upper()}{structured['more'][1:]}"
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


async def resume_job(job_id: JobId, ctx: Context) -> CallToolResult:
    """Run an interrupted, failed or cancelled job again, e.g. after a server restart.
    Chunks done before come from the cache: only the rest is embedded."""
    runner = _runner(ctx)
    roots = await _roots(ctx, runner)
    out = _status(await _call(lambda: runner.resume(job_id, roots)))
    return _answer(out, _line(out))


async def _async(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


def _prices(runner: JobRunner, job: JobRecord) -> dict[str, float | None]:
    """An OpenAI job's estimate at both prices; nothing for other providers."""
    if job.provider != "openai":
        return {}
    both = {
        name: estimate_usd(job.provider, job.model, job.estimated_tokens, runner.settings, batch=name == "batch_usd")
        for name in ("sync_usd", "batch_usd")
    }
    return {name: None if usd is None else round(usd, 6) for name, usd in both.items()}


def _patterns(value: list[str] | None) -> tuple[str, ...]:
    return tuple(pattern for pattern in value or () if pattern and pattern != "*")


def _changes_text(changes: dict[str, Any]) -> str:
    text = (
        f"Files: {changes['files_added']} added, {changes['files_changed']} changed, "
        f"{changes['files_removed']} removed, {changes['files_unchanged']} unchanged; chunks: "
        f"{changes['chunks_added']} added, {changes['chunks_removed']} removed."
    )
    skipped = changes.get("skipped") or {}
    if skipped:
        text += f" Skipped {sum(skipped.values())}: " + ", ".join(f"{n} {why}" for why, n in skipped.items()) + "."
    return text


def _dry_run_answer(report: dict[str, Any]) -> CallToolResult:
    usd = report["usd"]
    text = (
        f"Dry run, nothing sent: {report['files']} files, {report['chunks']} chunks; to embed "
        f"{report['to_embed']} chunks, {report['tokens']} tokens, "
        + ("price unknown" if usd is None else f"${usd:.6f}")
        + ("" if report["batch_usd"] is None else f" (Batch API ${report['batch_usd']:.6f})")
    )
    if report["top_directories"]:
        top = report["top_directories"][0]
        text += f"; most in {top['directory']} ({top['share']:.0%})"
    return CallToolResult(content=[TextContent(type="text", text=text + ".")], structured_content=report)
