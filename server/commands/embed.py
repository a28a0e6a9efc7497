"""`signal-hub-embeddings embed` and `cache`: batch jobs from the command line.

    signal-hub-embeddings embed chunks.jsonl -o vectors.jsonl
    signal-hub-embeddings embed src/ --glob '*.py' -o vectors.npy      # and vectors.ids.jsonl
    signal-hub-embeddings embed src/ --dry-run                          # what it would embed and cost
    jq -c '{id, text}' chunks.json | signal-hub-embeddings embed - -o - > vectors.jsonl
    signal-hub-embeddings embed chunks.jsonl -o vectors.jsonl --provider openai --engine batch-api
    signal-hub-embeddings embed chunks.jsonl -o vectors.npy --engine ray --ray-address ray://head:10001
    signal-hub-embeddings embed chunks.jsonl -o vectors/ --engine ray      # Parquet shards + manifest.json
    signal-hub-embeddings cache stats
    signal-hub-embeddings cache prune --older-than-days 30

The work is the core's job pipeline (`providers/jobs.py`, shared with the MCP job tools): input
is read lazily and embedded in windows of `--window` texts, so memory does not grow with the input
and every finished window is in the cache: a run that is killed and started again gets those
windows from the cache and sends only the rest. Output goes to `<output>.partial`, renamed only
when complete. Texts cut to the model's window are counted in the summary and marked on their rows.
Files and directories are chunked by syntax, and a rerun reads only what changed (`commands/tree.py`).

`--engine batch-api` sends the chunks missing from the cache through the OpenAI Batch API (half
price, within 24 h) and waits for the batches; killed and run again on the same input, it
re-attaches to them. `--engine ray` embeds with the local model on Ray Data (a local Ray, or the
cluster at `--ray-address`/RAY_ADDRESS).

Exit codes: 0 done, 1 the provider, the budget or writing failed, 2 bad usage or bad input (named
by file and line; input files are checked before anything is sent), 75 batches still running
(`--no-wait`), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from providers import INPUT_TYPES, ConfigurationError, EmbeddingError, EmbeddingService, InputError, InputType, Settings
from providers.batch_api.job_engine import BatchesRunning
from providers.chunking.incremental import Changes
from providers.jobs.engine import EngineJob, JobEngine
from providers.jobs.files import FORMATS, Chunk, DuplicateIds, Source, find_sources
from providers.jobs.outputs import check_cli_output
from providers.jobs.pipeline import Tally
from providers.jobs.repository import JobOptions
from providers.jobs.writers import JsonlWriter, NpyWriter, VectorWriter, ids_path
from providers.registry import provider_names
from providers.settings import InputLimits
from server.commands import tree
from server.commands.cache import format_bytes, run_cache
from server.commands.engines import EngineOptions, add_engine_arguments, default_provider, engine_options, open_engine
from server.commands.progress import cost_text, format_seconds, format_usd, progress_bar, say, showing_notices, summary
from server.commands.ray_shards import (
    add_shard_arguments,
    is_directory_output,
    run_ray_shards,
    shard_arguments_misplaced,
)
from server.tools.encoding import Encoding

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_commands",
    "cost_text",
    "format_bytes",
    "format_seconds",
    "format_usd",
    "progress_bar",
    "run_cache",
    "run_embed",
    "summary",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PENDING = 0, 1, 2, 130, 75
PROG = "signal-hub-embeddings"

# Measured on 10k stdlib chunks against the loopback OpenAI server at 0.2 s a request: the provider
# packs a window of 256 code chunks into one or two requests, so one window at a time took 21 s,
# 4 in flight 14 s, 8 in flight 13.5 s (and slower warm runs). Windows of 512-2048 were no faster
# one at a time than 256 with 4 in flight, and make a killed run redo more.
DEFAULT_WINDOW = 256


# --- the commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedJob:
    inputs: tuple[str, ...]
    output: Path | None
    """None: JSONL on stdout."""
    format: str = "auto"
    options: JobOptions = dataclasses.field(default_factory=JobOptions)
    dry_run: bool = False
    window: int = DEFAULT_WINDOW
    skip_invalid: bool = False
    progress: bool = True
    provider: str | None = None
    model: str | None = None
    encoding: Encoding = "float"
    input_type: InputType = "document"
    engines: EngineOptions = dataclasses.field(default_factory=EngineOptions)

    @property
    def npy(self) -> bool:
        return self.output is not None and self.output.suffix.lower() == ".npy"

    def sources(self) -> Iterator[Source]:
        return find_sources(self.inputs, self.format, self.options.filter, self.input_spec().excluded)

    def input_spec(self) -> tree.InputSpec:
        excluded = frozenset(p.resolve() for p in self.output_files())
        return tree.InputSpec(self.output, self.options, self.format, excluded, self.skip_invalid)

    def output_files(self) -> list[Path]:
        if self.output is None:
            return []
        files = [self.output, ids_path(self.output)] if self.npy else [self.output]
        return [*files, *(f.with_name(f.name + ".partial") for f in files)]

    def fingerprint(self, space: str) -> str:
        """A stable id for this input in this space (a rerun re-attaches)."""
        return tree.fingerprint(self.sources(), [space, self.options.to_column(), self.format])


def add_commands(subparsers: Any) -> None:
    """Register `embed` and `cache` on the CLI's subparsers; each sets `run(args, settings) -> exit code`."""
    embed = subparsers.add_parser(
        "embed",
        help="embed chunks from files or stdin into JSONL or .npy",
        description="Embed chunks and write their vectors. Progress and the summary go to stderr; stdout "
        "carries vectors only with --output -. Run again after a kill, it sends only chunks not yet cached.",
        epilog=f"exit codes: {EXIT_OK} done, {EXIT_FAILED} the provider, the budget or writing failed, "
        f"{EXIT_USAGE} bad usage or bad input (named by file and line), {EXIT_PENDING} batches still running "
        f"(--no-wait), {EXIT_INTERRUPTED} interrupted.",
    )
    embed.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help='a .jsonl file ({"id": ..., "text": ...} a line), a source or text file (chunked by syntax or in '
        "windows; ids path:first-last line), a directory (the files git would track, chunked), or - for stdin "
        "(JSONL unless --format says otherwise)",
    )
    embed.add_argument(
        "-o", "--output", help="out.jsonl, out.npy (and out.ids.jsonl), or - for JSONL on stdout (not with --dry-run)"
    )
    embed.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="auto: .jsonl/.ndjson files and stdin are JSONL, other files chunks; text: a whole file is one "
        "chunk, its id the path; lines: a chunk per non-blank line, its id 'name:line'",
    )
    embed.add_argument(
        "--encoding",
        choices=["float", "base64"],
        default="float",
        help="JSONL embeddings as a list of floats, or base64 of little-endian float32 (2.5x smaller)",
    )
    tree.add_tree_arguments(embed)
    embed.add_argument("--provider", choices=provider_names(), help="default: SIGNAL_HUB_PROVIDER")
    embed.add_argument("--model", help="the provider's model (default: as configured)")
    embed.add_argument(
        "--input-type", choices=INPUT_TYPES, default="document", help="document (default), or query: search texts"
    )
    embed.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help=f"texts per call and cache commit (default {DEFAULT_WINDOW})"
    )
    add_engine_arguments(embed)
    add_shard_arguments(embed)
    embed.add_argument("--skip-invalid", action="store_true", help="skip bad records (counted as failed), not stop")
    embed.add_argument("--no-cache", action="store_true", help="neither read nor fill the cache (no resuming)")
    embed.add_argument("--overwrite", action="store_true", help="replace an earlier run's output (never other files)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar; the summary is still printed")
    embed.set_defaults(run=run_embed)

    cache = subparsers.add_parser(
        "cache",
        help="inspect or prune the embedding cache",
        description="The vector cache (cache.sqlite3 under the data directory), shared by the server and embed.",
    )
    actions = cache.add_subparsers(dest="cache_command", metavar="{stats,prune}", required=True)
    stats_help = "entries, bytes and entries per vector space"
    actions.add_parser("stats", help=stats_help, description=stats_help.capitalize() + ".").add_argument(
        "--json", action="store_true", help="print JSON"
    )
    prune = actions.add_parser(
        "prune", help="delete cached vectors", description="Delete cached vectors: by space, by age, or all."
    )
    prune.add_argument("--space", help="only vectors of this space (see `cache stats`)")
    prune.add_argument("--older-than-days", type=float, metavar="N", help="only vectors stored over N days ago")
    prune.add_argument("--all", action="store_true", help="every cached vector")
    cache.set_defaults(run=run_cache)


@dataclass
class _Run:
    """A run of `embed`: the tally, and what the input held so far."""

    tally: Tally = dataclasses.field(default_factory=Tally)
    total: int | None = None
    """Valid chunks in the input (None: stdin, not counted ahead)."""
    read: int = 0
    """Valid chunks read so far."""
    duplicates: DuplicateIds = dataclasses.field(default_factory=DuplicateIds)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    changes: Changes | None = None

    def saw(self, chunk: Chunk) -> None:
        self.read += 1
        self.duplicates.add(chunk.id)

    def undone(self) -> int:
        """Valid chunks with no vector written: what a failure left."""
        return (self.read if self.total is None else self.total) - self.tally.written


def run_embed(args: argparse.Namespace, settings: Settings) -> int:
    """The `embed` command. Progress, errors and the summary go to stderr; returns the exit code."""
    if misplaced := shard_arguments_misplaced(args):
        return _fail(f"error: {misplaced}", _Run(), time.monotonic(), EXIT_USAGE)
    if args.engine == "ray" and args.output is not None and is_directory_output(args.output):
        return run_ray_shards(args, settings)
    started = time.monotonic()
    run = _Run()
    try:
        try:
            job = _job_from(args, settings.limits, settings.resolved_data_dir)
        except EmbeddingError as exc:
            return _fail(f"error: {exc}", run, started, EXIT_USAGE)
        with showing_notices():
            return _embed_and_report(job, settings, run, started, no_cache=args.no_cache)
    finally:
        run.duplicates.close()


def _embed_and_report(job: EmbedJob, settings: Settings, run: _Run, started: float, *, no_cache: bool) -> int:
    settings = dataclasses.replace(
        settings,
        cache=settings.cache and not no_cache,
        # One output file holds one vector space: no part of it may come from another provider.
        fallback=dataclasses.replace(settings.fallback, mode="never"),
        # One ledger session for the run, whichever engine spends (the Batch API's opens its own ledger).
        ledger_session=settings.ledger_session or uuid.uuid4().hex,
    )
    target = "stdout" if job.output is None else str(job.output)
    resumable = settings.cache
    try:
        space = anyio.run(_embed_all, job, settings, run)
    except BatchesRunning as exc:  # --no-wait
        _say(str(exc))
        return EXIT_PENDING
    except (ConfigurationError, InputError) as exc:
        return _fail(f"error: {exc}", run, started, EXIT_USAGE, resumable=resumable)
    except EmbeddingError as exc:
        return _fail(f"error: {exc}", run, started, EXIT_FAILED, resumable=resumable)
    except BrokenPipeError:
        with contextlib.suppress(OSError):  # so the exit's flush of stdout does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail("error: the reader of stdout went away", run, started, EXIT_FAILED, resumable=resumable)
    except OSError as exc:
        return _fail(f"error: cannot write {target}: {exc}", run, started, EXIT_FAILED, resumable=resumable)
    except KeyboardInterrupt:
        return _fail("interrupted", run, started, EXIT_INTERRUPTED, resumable=resumable)
    if job.dry_run:
        return EXIT_OK
    written = run.tally.written
    _say(f"wrote {written:,} vector{'' if written == 1 else 's'} to {target} ({space})")
    _report(run, started)
    return EXIT_OK


def _report(run: _Run, started: float) -> None:
    tally = run.tally
    _say(summary(tally, time.monotonic() - started), prefix="  ")
    if tally.truncated:
        _say(
            f"warning: {tally.truncated:,} chunk{'' if tally.truncated == 1 else 's'} longer than the model's "
            f"window {'was' if tally.truncated == 1 else 'were'} cut ({tally.dropped_tokens:,} tokens unseen; rows "
            'say "truncated": true). Chunk the input smaller, or set SIGNAL_HUB_LOCAL_LONG_TEXTS=split.'
        )
    if run.duplicates.count:
        _say(f"warning: {run.duplicates.describe()}; give each chunk its own id.")
    for line in tree.report_lines(run.skipped, run.changes):
        _say(line, prefix="  ")


def _job_from(args: argparse.Namespace, limits: InputLimits, data_dir: Path) -> EmbedJob:
    if not 1 <= args.window <= limits.max_texts:
        raise InputError(f"--window must be between 1 and {limits.max_texts}, not {args.window}.")
    engines = engine_options(args)
    if args.inputs.count("-") > 1:
        raise InputError("stdin (-) can be read only once.")
    for raw in args.inputs:
        if raw != "-" and not Path(raw).exists():
            raise InputError(f"{raw}: no such file or directory.")
    if args.output is None and not args.dry_run:
        raise InputError("name the output with -o (out.jsonl, out.npy or -), or pass --dry-run.")
    output = None if args.output in ("-", None) else Path(args.output)
    if output is not None and not args.dry_run:
        if output.is_dir():
            raise InputError(f"--output {output} is a directory; name a file, e.g. {output / 'vectors.jsonl'}.")
        if not output.parent.is_dir():
            raise InputError(f"--output {output}: the directory {output.parent} does not exist.")
        # A rerun onto a tree's earlier output reads only what changed: that output is its own.
        rerun = tree.earlier_run(output, data_dir)
        check_cli_output(output, args.inputs, data_dir, overwrite=args.overwrite or rerun)
    return EmbedJob(
        inputs=tuple(args.inputs),
        output=output,
        format=args.format,
        options=tree.tree_options(args),
        dry_run=args.dry_run,
        window=args.window,
        skip_invalid=args.skip_invalid,
        progress=not args.no_progress,
        provider=args.provider,
        model=args.model,
        encoding=args.encoding,
        input_type=args.input_type,
        engines=engines,
    )


async def _embed_all(job: EmbedJob, settings: Settings, run: _Run) -> str:
    async with EmbeddingService(job.provider or default_provider(job.engines), job.model, settings=settings) as service:
        if job.dry_run:  # no engine: nothing is sent
            return await tree.dry_run(job.inputs, job.input_spec(), settings, service.provider)
        engine = open_engine(job.engines, settings, service)
        try:
            return await _embed_with(engine, service, job, settings, run)
        finally:
            if job.engines.engine != "in-process":
                with anyio.CancelScope(shield=True):
                    await engine.aclose()


async def _embed_with(
    engine: JobEngine, service: EmbeddingService, job: EmbedJob, settings: Settings, run: _Run
) -> str:
    provider = engine.provider(service.provider.name)
    await provider.resolve_space()  # the file's space must be final (a compatible server's length) before it opens
    space = provider.space_for(job.input_type)
    job_input, run.total = await anyio.to_thread.run_sync(
        tree.prepare, job.inputs, job.input_spec(), settings, provider, space
    )
    writer: VectorWriter = (
        NpyWriter(job.output, provider.dimensions, job_input.fields)
        if job.npy and job.output is not None
        else JsonlWriter(job.output, space, job.encoding, job_input.fields)
    )
    tally = run.tally
    job_id = "embed" if job.engines.engine == "in-process" else job.fingerprint(space)
    engine_job = EngineJob(job_id, provider.name, space, window=job.window, input_type=job.input_type)
    with progress_bar(run.total, enabled=job.progress) as bar:

        def show(done: int) -> None:
            bar.set_postfix_str(cost_text(tally), refresh=False)
            bar.update(done - bar.n)

        try:
            tally.cached += await anyio.to_thread.run_sync(job_input.write_carried, writer, provider.dimensions)
            chunks = tree.valid_chunks(job_input, settings.limits, job.skip_invalid, tally, run.saw, _say)
            await engine.run(engine_job, chunks, writer, tally, show)
            writer.commit()
            job_input.commit()
        except BaseException:
            writer.discard()
            raise
        finally:
            show(tally.written)
            run.skipped = dict(job_input.skipped)
            if job_input.run.previous is not None:
                run.changes = job_input.changes
    return space


def _fail(message: str, run: _Run, started: float, code: int, *, resumable: bool = False) -> int:
    _say(message)
    run.tally.failed += max(run.undone(), 0)
    _report(run, started)
    if resumable and run.tally.written:
        _say(f"the {run.tally.written:,} vectors done are cached: the same command again goes on from there.")
    return code


def _say(message: str, *, prefix: str = f"{PROG}: ") -> None:
    say(message, prefix=prefix)
