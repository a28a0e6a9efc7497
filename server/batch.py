"""`signal-hub-embeddings embed` and `cache`: batch jobs from the command line.

    signal-hub-embeddings embed chunks.jsonl -o vectors.jsonl
    signal-hub-embeddings embed src/ --glob '*.py' -o vectors.npy      # and vectors.ids.jsonl
    jq -c '{id, text}' chunks.json | signal-hub-embeddings embed - -o - > vectors.jsonl
    signal-hub-embeddings cache stats
    signal-hub-embeddings cache prune --older-than-days 30

Input is read lazily and embedded in windows of `--window` texts, one `EmbeddingService.embed`
call each, so memory does not grow with the input and every finished window is in the cache: a
run that is killed and started again gets those windows from the cache and sends only the rest.
Output goes to `<output>.partial`, renamed only when complete, so a killed run never leaves a
truncated file that looks finished.

Exit codes: 0 done, 1 the provider, the budget or writing failed, 2 bad usage or bad input (named
by file and line; input files are checked before anything is sent), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import numpy as np

from providers import ConfigurationError, EmbeddingError, EmbeddingResult, EmbeddingService, InputError, Settings
from providers.registry import provider_names
from providers.settings import InputLimits

from .batch_io import (
    FORMATS,
    Chunk,
    JsonlWriter,
    NpyWriter,
    Source,
    VectorWriter,
    find_sources,
    ids_path,
    read_chunks,
    windows,
)
from .encoding import Encoding

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "add_commands", "run_cache", "run_embed"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "signal-hub-embeddings"

# Measured on 10k stdlib chunks against the loopback OpenAI server at 0.2 s a request: the provider
# packs a window of 256 code chunks into one or two requests, so one window at a time took 21 s,
# 4 in flight 14 s, 8 in flight 13.5 s (and slower warm runs). Windows of 512-2048 were no faster
# one at a time than 256 with 4 in flight, and make a killed run redo more. The local model is
# compute-bound either way.
DEFAULT_WINDOW = 256
IN_FLIGHT = 4
_MAX_REPORTED_SKIPS = 20


# --- progress and summary --------------------------------------------------------------------------


@dataclass
class Tally:
    """What a job has done so far: every count the summary reports."""

    embedded: int = 0
    """Texts the provider embedded in this run."""
    cached: int = 0
    """Chunks answered without the provider: from the cache, or repeating a text embedded earlier in the run."""
    failed: int = 0
    """Bad records skipped (--skip-invalid)."""
    tokens: int = 0
    usd: float = 0.0
    unpriced: bool = False

    @property
    def written(self) -> int:
        return self.embedded + self.cached

    def add(self, result: EmbeddingResult | None, *, rows: int, sent: int) -> None:
        """Count a window of `rows` chunks that sent `sent` distinct texts (none: `result` is None)."""
        embedded = 0 if result is None else sent - result.cached
        self.embedded += embedded
        self.cached += rows - embedded
        if result is not None:
            self.tokens += result.tokens
            self.unpriced = self.unpriced or result.cost_usd is None
            self.usd += result.cost_usd or 0.0

    def cost(self) -> str:
        return format_usd(self.usd) + (" + unpriced tokens" if self.unpriced else "")

    def summary(self, seconds: float) -> str:
        return (
            f"embedded {self.embedded:,}, cached {self.cached:,}, failed {self.failed:,}; "
            f"{self.tokens:,} tokens, {self.cost()}; {format_seconds(seconds)}"
        )


class ProgressBar:
    """Items, rate, ETA and cost so far, on stderr: redrawn in place on a terminal, else a line every 10 s."""

    def __init__(
        self, stream: IO[str], total: int | None, *, enabled: bool = True, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.total = total
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self._now = now
        self._samples: deque[tuple[float, int]] = deque([(now(), 0)])
        self._shown_at = -1e9

    def update(self, done: int, tally: Tally, *, final: bool = False) -> None:
        now = self._now()
        if now - self._samples[-1][0] >= 0.5:
            self._samples.append((now, done))
            while now - self._samples[0][0] > 30:  # the rate is over the last 30 s: resumed runs start fast
                self._samples.popleft()
        if not self.enabled or (not final and now - self._shown_at < (0.1 if self.tty else 10.0)):
            return
        self._shown_at = now
        line = self.render(done, tally, now)
        self.stream.write(f"\r{line}\x1b[K{chr(10) if final else ''}" if self.tty else f"{line}\n")
        self.stream.flush()

    def render(self, done: int, tally: Tally, now: float) -> str:
        then, before = self._samples[0]
        rate = (done - before) / (now - then) if now > then else 0.0
        parts = [f"{done:,}" if self.total is None else f"{done:,}/{self.total:,}"]
        if self.total:
            filled = round(20 * done / self.total)
            parts.append(f"{done / self.total:4.0%} [{'#' * filled}{'.' * (20 - filled)}]")
        parts.append(f"{rate:,.1f} items/s")
        if self.total is not None and rate > 0:
            parts.append(f"ETA {format_seconds((self.total - done) / rate)}")
        parts.append(tally.cost())
        return "embedding " + "  ".join(parts)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_usd(usd: float) -> str:
    return "$0.00" if usd == 0 else f"${usd:,.4f}" if usd >= 0.01 else f"${usd:.6f}"


# --- the pipeline ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Slot:
    """One window on its way through the pipeline."""

    window: list[Chunk]
    texts: list[str] = field(default_factory=list)
    """What this window sends: each text once, without texts an earlier window in flight sends."""
    rows: list[tuple[_Slot, int]] = field(default_factory=list)
    """For each chunk, the window whose result holds its vector, and the row there."""
    done: anyio.Event = field(default_factory=anyio.Event)
    progress: int = 0
    result: EmbeddingResult | None = None
    error: Exception | None = None


class Pipeline:
    """Keeps `in_flight` windows with the provider and writes them in input order as they complete.

    Windows in flight together keep the OpenAI provider's requests flowing across window boundaries
    and let writing overlap embedding. A text that an earlier window in flight already sends is not
    sent again but takes that window's vector: a repeated chunk is embedded once, as it would be
    with one call at a time (the second call finding it in the cache).
    """

    def __init__(
        self, service: EmbeddingService, writer: VectorWriter, bar: ProgressBar, tally: Tally, in_flight: int
    ) -> None:
        self.service = service
        self.writer = writer
        self.bar = bar
        self.tally = tally
        self.in_flight = in_flight
        self.space = service.provider.space
        self._pending: deque[_Slot] = deque()
        self._sending: dict[str, tuple[_Slot, int]] = {}
        self._bad_input: InputError | None = None

    async def run(self, batches: Iterable[list[Chunk]]) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:
            try:
                for window in self._until_bad_input(batches):
                    slot = self._plan(window)
                    self._pending.append(slot)
                    tasks.start_soon(self._embed, slot)
                    if len(self._pending) >= self.in_flight:
                        await self._write_next()
                # After bad input too: the windows in flight are good work, and get into the cache.
                while self._pending:
                    await self._write_next()
            except Exception as exc:  # a failed call or write: stop the windows in flight
                failure = exc
                tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if self._bad_input is not None:
            raise self._bad_input

    def _until_bad_input(self, batches: Iterable[list[Chunk]]) -> Iterator[list[Chunk]]:
        try:
            yield from batches
        except InputError as exc:  # a bad line of stdin, found as it is read
            self._bad_input = exc

    def _plan(self, window: list[Chunk]) -> _Slot:
        slot = _Slot(window)
        for chunk in window:
            source = self._sending.get(chunk.text)
            if source is None:
                source = self._sending[chunk.text] = (slot, len(slot.texts))
                slot.texts.append(chunk.text)
            slot.rows.append(source)
        return slot

    async def _embed(self, slot: _Slot) -> None:
        async def progress(done: int, total: int) -> None:
            slot.progress = len(slot.window) * done // max(total, 1)
            self._show()

        try:
            if slot.texts:
                slot.result = await self.service.embed(slot.texts, progress=progress)
                if slot.result.space != self.space:  # pragma: no cover - fallback is off; a guard
                    raise EmbeddingError(f"{slot.result.space} answered, not {self.space}: two spaces in one file.")
        except Exception as exc:
            slot.error = exc
        finally:
            slot.done.set()

    async def _write_next(self) -> None:
        slot = self._pending[0]
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        rows = []
        for source, row in slot.rows:
            assert source.result is not None  # it sends this text and is written first
            rows.append(source.result.vectors[row])
        vectors = np.stack(rows)
        await anyio.to_thread.run_sync(self.writer.write, [chunk.id for chunk in slot.window], vectors)
        self._pending.popleft()
        for text in slot.texts:
            del self._sending[text]
        self.tally.add(slot.result, rows=len(slot.window), sent=len(slot.texts))
        slot.rows.clear()  # later windows may still read this one's result, but nothing older stays alive
        self._show()

    def _show(self) -> None:
        self.bar.update(self.tally.written + sum(slot.progress for slot in self._pending), self.tally)


# --- the commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedJob:
    inputs: tuple[str, ...]
    output: Path | None
    """None: JSONL on stdout."""
    format: str = "auto"
    glob: str = "*"
    window: int = DEFAULT_WINDOW
    skip_invalid: bool = False
    progress: bool = True
    provider: str | None = None
    model: str | None = None
    encoding: Encoding = "float"

    @property
    def npy(self) -> bool:
        return self.output is not None and self.output.suffix.lower() == ".npy"

    def sources(self) -> Iterator[Source]:
        return find_sources(self.inputs, self.format, self.glob, frozenset(p.resolve() for p in self.output_files()))

    def output_files(self) -> list[Path]:
        if self.output is None:
            return []
        files = [self.output, ids_path(self.output)] if self.npy else [self.output]
        return [*files, *(f.with_name(f.name + ".partial") for f in files)]


def add_commands(subparsers: Any) -> None:
    """Register `embed` and `cache` on the CLI's subparsers; each sets `run(args, settings) -> exit code`."""
    embed = subparsers.add_parser(
        "embed",
        help="embed chunks from files or stdin into JSONL or .npy",
        description="Embed chunks and write their vectors. Progress and the summary go to stderr; stdout "
        "carries vectors only with --output -. Run again after a kill, it sends only chunks not yet cached.",
    )
    embed.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help='a .jsonl file ({"id": ..., "text": ...} a line), any other file (one chunk; the path is its id), '
        "a directory (its files, recursively), or - for stdin (JSONL unless --format says otherwise)",
    )
    embed.add_argument(
        "-o", "--output", required=True, help="out.jsonl, out.npy (and out.ids.jsonl), or - for JSONL on stdout"
    )
    embed.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="auto: .jsonl/.ndjson files and stdin are JSONL, other files one chunk each; "
        "lines: a chunk per non-blank line, its id 'name:line'",
    )
    embed.add_argument(
        "--encoding",
        choices=["float", "base64"],
        default="float",
        help="JSONL embeddings as a list of floats, or base64 of little-endian float32 (2.5x smaller)",
    )
    embed.add_argument("--glob", default="*", help="names of the files to take from directories, e.g. '*.py'")
    embed.add_argument("--provider", choices=provider_names(), help="default: SIGNAL_HUB_PROVIDER")
    embed.add_argument("--model", help="the provider's model (default: as configured)")
    embed.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help=f"texts per call and cache commit (default {DEFAULT_WINDOW})"
    )
    embed.add_argument("--skip-invalid", action="store_true", help="skip bad records (counted as failed), not stop")
    embed.add_argument("--no-cache", action="store_true", help="neither read nor fill the cache (no resuming)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar; the summary is still printed")
    embed.set_defaults(run=run_embed)

    cache = subparsers.add_parser("cache", help="inspect or prune the embedding cache")
    actions = cache.add_subparsers(dest="cache_command", metavar="{stats,prune}", required=True)
    actions.add_parser("stats", help="entries, bytes and entries per vector space").add_argument(
        "--json", action="store_true", help="print JSON"
    )
    prune = actions.add_parser("prune", help="delete cached vectors")
    prune.add_argument("--space", help="only vectors of this space (see `cache stats`)")
    prune.add_argument("--older-than-days", type=float, metavar="N", help="only vectors stored over N days ago")
    prune.add_argument("--all", action="store_true", help="every cached vector")
    cache.set_defaults(run=run_cache)


def run_embed(args: argparse.Namespace, settings: Settings) -> int:
    """The `embed` command. Progress, errors and the summary go to stderr; returns the exit code."""
    started = time.monotonic()
    tally = Tally()
    try:
        job = _job_from(args, settings.limits)
        total = _preflight(job, settings.limits)
    except EmbeddingError as exc:
        return _fail(f"error: {exc}", tally, started, EXIT_USAGE)
    settings = dataclasses.replace(
        settings,
        cache=settings.cache and not args.no_cache,
        # One output file holds one vector space: no part of it may come from another provider.
        fallback=dataclasses.replace(settings.fallback, mode="never"),
    )
    target = "stdout" if job.output is None else str(job.output)
    resumable = settings.cache
    try:
        space = anyio.run(_embed_all, job, settings, total, tally)
    except (ConfigurationError, InputError) as exc:
        return _fail(f"error: {exc}", tally, started, EXIT_USAGE, resumable=resumable)
    except EmbeddingError as exc:
        return _fail(f"error: {exc}", tally, started, EXIT_FAILED, resumable=resumable)
    except BrokenPipeError:
        with contextlib.suppress(OSError):  # so the exit's flush of stdout does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail("error: the reader of stdout went away", tally, started, EXIT_FAILED, resumable=resumable)
    except OSError as exc:
        return _fail(f"error: cannot write {target}: {exc}", tally, started, EXIT_FAILED, resumable=resumable)
    except KeyboardInterrupt:
        return _fail("interrupted", tally, started, EXIT_INTERRUPTED, resumable=resumable)
    _say(f"wrote {tally.written:,} vector{'' if tally.written == 1 else 's'} to {target} ({space})")
    _say(tally.summary(time.monotonic() - started), prefix="  ")
    return EXIT_OK


def _job_from(args: argparse.Namespace, limits: InputLimits) -> EmbedJob:
    if not 1 <= args.window <= limits.max_texts:
        raise InputError(f"--window must be between 1 and {limits.max_texts}, not {args.window}.")
    if args.inputs.count("-") > 1:
        raise InputError("stdin (-) can be read only once.")
    for raw in args.inputs:
        if raw != "-" and not Path(raw).exists():
            raise InputError(f"{raw}: no such file or directory.")
    output = None if args.output == "-" else Path(args.output)
    if output is not None:
        if output.is_dir():
            raise InputError(f"--output {output} is a directory; name a file, e.g. {output / 'vectors.jsonl'}.")
        if not output.parent.is_dir():
            raise InputError(f"--output {output}: the directory {output.parent} does not exist.")
        if output.resolve() in {Path(raw).resolve() for raw in args.inputs if raw != "-"}:
            raise InputError(f"--output {output} is also an input; write the vectors elsewhere.")
    return EmbedJob(
        inputs=tuple(args.inputs),
        output=output,
        format=args.format,
        glob=args.glob,
        window=args.window,
        skip_invalid=args.skip_invalid,
        progress=not args.no_progress,
        provider=args.provider,
        model=args.model,
        encoding=args.encoding,
    )


def _preflight(job: EmbedJob, limits: InputLimits) -> int | None:
    """Check every input file before anything is sent, and count the chunks (None: stdin is not countable)."""
    if "-" in job.inputs:
        return None
    return sum(1 for _ in _valid(job, limits, Tally(), report=False))


def _valid(job: EmbedJob, limits: InputLimits, tally: Tally, *, report: bool = True) -> Iterator[Chunk]:
    for source in job.sources():
        for item in read_chunks(source, limits):
            if isinstance(item, Chunk):
                yield item
            elif not job.skip_invalid:
                raise InputError(f"{item}. Fix it, or pass --skip-invalid to skip bad records.")
            else:
                tally.failed += 1
                if report and tally.failed <= _MAX_REPORTED_SKIPS:
                    _say(f"skipped {item}")
                elif report and tally.failed == _MAX_REPORTED_SKIPS + 1:
                    _say("skipping more bad records without naming them")


async def _embed_all(job: EmbedJob, settings: Settings, total: int | None, tally: Tally) -> str:
    async with EmbeddingService(job.provider, job.model, settings=settings) as service:
        provider = service.provider
        writer: VectorWriter = (
            NpyWriter(job.output, provider.dimensions)
            if job.npy and job.output is not None
            else JsonlWriter(job.output, provider.space, job.encoding)
        )
        bar = ProgressBar(sys.stderr, total, enabled=job.progress)
        chunks = windows(_valid(job, settings.limits, tally), job.window, settings.limits.max_total_chars)
        try:
            await Pipeline(service, writer, bar, tally, IN_FLIGHT).run(chunks)
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        finally:
            chunks.close()  # a failure leaves the input half read: close its file now, not when collected
            bar.update(tally.written, tally, final=True)
        return provider.space


def _fail(message: str, tally: Tally, started: float, code: int, *, resumable: bool = False) -> int:
    _say(message)
    _say(tally.summary(time.monotonic() - started), prefix="  ")
    if resumable and tally.written:
        _say(f"the {tally.written:,} vectors done are cached: the same command again goes on from there.")
    return code


def _say(message: str, *, prefix: str = f"{PROG}: ") -> None:
    print(f"{prefix}{message}", file=sys.stderr, flush=True)


def run_cache(args: argparse.Namespace, settings: Settings) -> int:
    """`cache stats` and `cache prune`, printed on stdout; they work even while SIGNAL_HUB_CACHE=off."""
    if args.cache_command == "prune":
        if args.all == (args.space is not None or args.older_than_days is not None):
            _say("cache prune: say what to delete: --space and/or --older-than-days, or --all.")
            return EXIT_USAGE
        if args.older_than_days is not None and not args.older_than_days >= 0:
            _say("cache prune: --older-than-days must be a number of days, 0 or more.")
            return EXIT_USAGE
    try:
        service = EmbeddingService(settings=dataclasses.replace(settings, cache=True))
    except EmbeddingError as exc:
        _say(f"cache: {exc}")
        return EXIT_USAGE
    try:
        cache = service.cache
        assert cache is not None
        if args.cache_command == "prune":
            older = None if args.older_than_days is None else args.older_than_days * 86_400
            removed = cache.prune(space=args.space, older_than_s=older)
            print(f"pruned {removed:,} entries; {cache.stats().entries:,} left in {cache.path}")
            return EXIT_OK
        stats = cache.stats()
        on_disk = sum(p.stat().st_size for p in cache.path.parent.glob(f"{cache.path.name}*") if p.is_file())
        if args.json:
            keys = {"path": str(cache.path), "enabled": settings.cache, "entries": stats.entries}
            print(json.dumps(keys | {"bytes": stats.bytes, "file_bytes": on_disk, "by_space": stats.by_space}))
            return EXIT_OK
        print(f"cache {cache.path}{'' if settings.cache else ' (not used: SIGNAL_HUB_CACHE is off)'}")
        print(f"{stats.entries:,} entries, {format_bytes(stats.bytes)} of vectors, {format_bytes(on_disk)} on disk")
        for space, entries in stats.by_space.items():
            print(f"{entries:>12,}  {space}")
        return EXIT_OK
    finally:
        anyio.run(service.aclose)


def format_bytes(size: int) -> str:
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size:,} B" if unit == "B" else f"{value:,.1f} {unit}"
