"""The `embed` command's options for files and directories, and the lines it prints about them.

signal-hub-embeddings embed src/ -o vectors.jsonl --glob '*.py' --exclude 'tests/'
signal-hub-embeddings embed src/ --dry-run                  # files, chunks, tokens, cost; nothing sent
signal-hub-embeddings embed src/ -o vectors.npy --chunk-tokens 384
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from providers import InputError, InputLimits, Settings
from providers.base import EmbeddingProvider
from providers.chunking.budget import MIN_CHUNK_TOKENS, chunk_budget
from providers.chunking.incremental import Changes
from providers.chunking.manifest import ManifestStore
from providers.chunking.selection import DEFAULT_MAX_FILE_BYTES, FileFilter
from providers.jobs.files import Chunk, Invalid, Source
from providers.jobs.pipeline import Tally
from providers.jobs.repository import JobInput, JobOptions
from providers.jobs.scan import DryRun
from server.commands.progress import format_usd

__all__ = [
    "InputSpec",
    "add_tree_arguments",
    "changes_line",
    "dry_run",
    "dry_run_text",
    "fingerprint",
    "open_input",
    "preflight",
    "prepare",
    "report_lines",
    "skipped_line",
    "tree_options",
    "valid_chunks",
]

_MAX_REPORTED_SKIPS = 20


@dataclass(frozen=True)
class InputSpec:
    """What `embed` reads besides the inputs: where it writes, how it picks and chunks files."""

    output: Path | None
    options: JobOptions
    format: str
    excluded: frozenset[Path]
    skip_invalid: bool


def open_input(
    inputs: Sequence[str], spec: InputSpec, settings: Settings, provider: EmbeddingProvider, space: str | None = None
) -> JobInput:
    return JobInput.open(
        inputs,
        output=spec.output,
        budget=chunk_budget(provider, settings, spec.options.chunk_tokens),
        options=spec.options,
        space=space or provider.space,
        fmt=spec.format,
        exclude=spec.excluded,
        manifests=ManifestStore(settings.resolved_data_dir / "chunk_manifests"),
    )


def earlier_run(output: Path, data_dir: Path) -> bool:
    """Whether a run of a file tree wrote `output` before (its state is kept for the next, incremental run)."""
    try:
        found = json.loads(ManifestStore(data_dir / "chunk_manifests").file_for(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and bool(found.get("files"))


def preflight(
    inputs: Sequence[str], spec: InputSpec, settings: Settings, provider: EmbeddingProvider, space: str | None = None
) -> DryRun | None:
    """Check every input file before anything is sent, and count the chunks (None: stdin is not countable)."""
    if "-" in inputs:
        return None
    job_input = open_input(inputs, spec, settings, provider, space)

    def invalid(item: Invalid) -> None:
        if not spec.skip_invalid:
            raise InputError(f"{item}. Fix it, or pass --skip-invalid to skip bad records.")

    totals = job_input.totals(settings.limits, invalid, lambda chunk: None)
    return DryRun(totals, job_input, provider.name, provider.model, provider.space, job_input.budget)


def add_tree_arguments(embed: Any) -> None:
    embed.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="PATTERN",
        help="take only files matching this gitignore-style pattern (e.g. '*.py', 'src/**'); repeatable",
    )
    embed.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN", help="leave out matching files; repeatable"
    )
    embed.add_argument(
        "--chunk-tokens",
        type=int,
        metavar="N",
        help="tokens per chunk of a source file, by the model's tokenizer (default: the local model's "
        "window, 256 for all-MiniLM-L6-v2; 512 for remote models)",
    )
    embed.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="N",
        help=f"leave out files in directories over N bytes (default {DEFAULT_MAX_FILE_BYTES:,})",
    )
    embed.add_argument(
        "--dry-run",
        action="store_true",
        help="report files, chunks, tokens, the cost and the directories with the most tokens; send nothing",
    )


def tree_options(args: argparse.Namespace) -> JobOptions:
    if args.chunk_tokens is not None and args.chunk_tokens < MIN_CHUNK_TOKENS:
        raise InputError(f"--chunk-tokens must be at least {MIN_CHUNK_TOKENS}, not {args.chunk_tokens}.")
    if args.max_file_bytes < 1:
        raise InputError(f"--max-file-bytes must be positive, not {args.max_file_bytes}.")
    globs = tuple(pattern for pattern in args.glob if pattern != "*")
    return JobOptions(FileFilter(globs, tuple(args.exclude), args.max_file_bytes), args.chunk_tokens)


def prepare(
    inputs: Sequence[str], spec: InputSpec, settings: Settings, provider: EmbeddingProvider, space: str
) -> tuple[JobInput, int | None]:
    """The input, checked and counted (None: stdin); the same plan is then read again as it is embedded."""
    checked = preflight(inputs, spec, settings, provider, space)
    if checked is None:
        return open_input(inputs, spec, settings, provider, space), None
    return checked.job_input, checked.totals.chunks


def valid_chunks(
    job_input: JobInput,
    limits: InputLimits,
    skip_invalid: bool,
    tally: Tally,
    saw: Callable[[Chunk], None],
    say: Callable[[str], None],
) -> Iterator[Chunk]:
    """The chunks to embed; a bad record stops the run, or with `skip_invalid` is counted as failed."""
    for item in job_input.items(limits):
        if isinstance(item, Chunk):
            saw(item)
            yield item
        elif isinstance(item, Invalid):
            if not skip_invalid:
                raise InputError(f"{item}. Fix it, or pass --skip-invalid to skip bad records.")
            tally.failed += 1
            if tally.failed <= _MAX_REPORTED_SKIPS:
                say(f"skipped {item}")
            elif tally.failed == _MAX_REPORTED_SKIPS + 1:
                say("skipping more bad records without naming them")


async def dry_run(inputs: Sequence[str], spec: InputSpec, settings: Settings, provider: EmbeddingProvider) -> str:
    """Print the dry run's report on stdout; the space it is for."""
    found = await anyio.to_thread.run_sync(preflight, inputs, spec, settings, provider)
    if found is None:
        raise InputError("--dry-run reads files and directories, not stdin.")
    print(dry_run_text(found.report(settings)), flush=True)
    return provider.space


def report_lines(skipped: dict[str, int], changes: Changes | None) -> list[str]:
    """The summary's lines about files: what was skipped, and what changed since the last run."""
    lines = [line] if (line := skipped_line(skipped)) is not None else []
    return lines + ([changes_line(changes)] if changes is not None else [])


def fingerprint(sources: Iterable[Source], settings: list[str]) -> str:
    """Each input file's path, size and mtime under `settings`: the same input gives the same id."""
    digest = hashlib.sha256(json.dumps(settings).encode())
    for source in sources:
        if source.path is None:  # stdin: nothing to know it by again
            return f"cli-stdin-{time.time_ns()}"
        info = source.path.stat()
        digest.update(json.dumps([str(source.path.resolve()), info.st_size, info.st_mtime_ns]).encode())
    return f"cli-{digest.hexdigest()[:24]}"


def skipped_line(skipped: dict[str, int]) -> str | None:
    """E.g. "skipped 14 files: 9 binary, 5 build or vendored directory"."""
    total = sum(skipped.values())
    if not total:
        return None
    reasons = ", ".join(f"{count:,} {reason}" for reason, count in sorted(skipped.items(), key=lambda kv: -kv[1]))
    return f"skipped {total:,} file{'' if total == 1 else 's'}: {reasons}"


def changes_line(changes: Changes) -> str:
    return f"since the last run: {changes.describe()}"


def dry_run_text(report: dict[str, Any]) -> str:
    """The dry run's report as lines for a person."""
    usd = report["usd"]
    price = "price unknown" if usd is None else format_usd(usd)
    if report["batch_usd"] is not None:
        price += f" (Batch API {format_usd(report['batch_usd'])})"
    lines = [
        f"dry run: nothing was sent ({report['space']}, chunks of at most {report['chunk_tokens']} tokens)",
        f"{report['files']:,} files, {report['chunks']:,} chunks; to embed: {report['to_embed']:,} chunks, "
        f"{report['tokens']:,} tokens, {price} at most (cached chunks cost nothing)",
    ]
    if report["top_directories"]:
        lines.append("directories with the most tokens:")
        lines.extend(
            f"  {row['directory']:<40} {row['tokens']:>12,} tokens  {row['share']:6.1%}"
            for row in report["top_directories"]
        )
    if (skipped := skipped_line(report["skipped"])) is not None:
        lines.append(skipped)
    if report["changes"] is not None:
        lines.append(changes_line(Changes(**report["changes"])))
    return "\n".join(lines)
