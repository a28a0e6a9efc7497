"""`embed INPUT... -o DIR --engine ray`: the Ray engine's own output, shards plus `DIR/manifest.json`.

    signal-hub-embeddings embed chunks.jsonl -o vectors/ --engine ray [--shard-format jsonl]

A file (`-o out.jsonl`, `-o out.npy`) is written as by the other engines; a directory gets
Parquet (or JSONL) shards of `--shard-rows` rows and the manifest: the space, the model, its
weights' SHA-256, the counts, tokens and wall time. A rerun after a kill keeps every complete
shard and every vector the cache already holds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from providers import ConfigurationError, EmbeddingError, InputError, Settings
from providers.ray_engine import SHARD_FORMATS, RayJobOptions, RayJobReport, run_ray_job
from server.commands.progress import format_seconds, progress_bar

__all__ = [
    "RAY_PAYS_OFF_ROWS",
    "add_shard_arguments",
    "count_rows",
    "is_directory_output",
    "run_ray_shards",
    "shard_arguments_misplaced",
]

RAY_PAYS_OFF_ROWS = 5_000
"""Below this many chunks, on a Ray this command starts itself, the in-process engine usually finishes
first: Ray's start-up and planning outweigh its actors (`python -m benchmarks.ray_commands`)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_FILE_SUFFIXES = {".jsonl", ".ndjson", ".json", ".npy"}


def add_shard_arguments(embed: argparse.ArgumentParser) -> None:
    embed.add_argument(
        "--shard-format",
        choices=SHARD_FORMATS,
        help="--engine ray with a directory as --output: the shards' format (default parquet)",
    )
    embed.add_argument(
        "--shard-rows",
        type=int,
        help="--engine ray with a directory as --output: rows per shard, the unit a rerun resumes by (default 1000)",
    )


def is_directory_output(output: str) -> bool:
    """`-o DIR` (an existing directory, a path ending in a separator, or a name with no file suffix)."""
    if output == "-":
        return False
    path = Path(output)
    return path.is_dir() or output.endswith(("/", "\\")) or path.suffix.lower() not in _FILE_SUFFIXES


def shard_arguments_misplaced(args: argparse.Namespace) -> str | None:
    """What is wrong when shard options are given without a Ray directory output (None: nothing)."""
    if args.shard_format is None and args.shard_rows is None:
        return None
    if args.engine != "ray" or not is_directory_output(args.output):
        return "--shard-format and --shard-rows go with --engine ray and a directory as --output."
    return None


def run_ray_shards(args: argparse.Namespace, settings: Settings) -> int:
    """Run the Ray job into the directory `args.output`; progress and the summary go to stderr."""
    options = RayJobOptions(
        inputs=tuple(args.inputs),
        output=Path(args.output),
        address=args.ray_address,
        actors=args.actors,
        shard_format=args.shard_format or "parquet",
        shard_rows=args.shard_rows or 1000,
    )
    if "-" in options.inputs:
        return _fail("error: --engine ray reads files (JSONL or Parquet), not stdin.", EXIT_USAGE)
    if args.model:
        return _fail("error: --engine ray embeds with SIGNAL_HUB_LOCAL_MODEL; leave out --model.", EXIT_USAGE)
    rows = count_rows(options.inputs)
    if rows is not None and rows < RAY_PAYS_OFF_ROWS and not (args.ray_address or _ray_address_set()):
        _say(
            f"note: {rows:,} chunks are too few for Ray to pay off on this machine: the in-process engine "
            f"is faster below about {RAY_PAYS_OFF_ROWS:,} (leave out --engine ray, and name a file as --output)."
        )
    done = [0]
    with progress_bar(rows, enabled=not args.no_progress) as bar:

        def show(rows_done: int, total: int) -> None:
            done[0] = rows_done
            bar.total = total
            bar.update(rows_done - bar.n)

        try:
            report = run_ray_job(options, settings, progress=show)
        except (ConfigurationError, InputError) as exc:
            return _fail(f"error: {exc}", EXIT_USAGE)
        except EmbeddingError as exc:
            return _fail(f"error: {exc}", EXIT_FAILED)
        except KeyboardInterrupt:
            return _fail(
                f"interrupted after {done[0]:,} chunks: complete shards stay in {options.output} and every finished "
                "vector is cached, so the same command again goes on from there.",
                EXIT_INTERRUPTED,
            )
    vectors = f"{report.rows:,} vector{'' if report.rows == 1 else 's'}"
    shards = f"{report.shards:,} shard{'' if report.shards == 1 else 's'}"
    _say(f"wrote {vectors} in {shards} to {options.output} ({report.space})")
    _say(_summary(report), prefix="  ")
    return EXIT_OK


def count_rows(inputs: tuple[str, ...]) -> int | None:
    """Records in local JSONL or Parquet inputs (None when some input cannot be counted here)."""
    total = 0
    for raw in inputs:
        path = Path(raw)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                return None
            if file.suffix.lower() in {".parquet", ".pq"}:
                import pyarrow.parquet as pq

                total += pq.ParquetFile(file).metadata.num_rows
            else:
                with file.open("rb") as lines:
                    total += sum(1 for line in lines if line.strip())
    return total


def _summary(report: RayJobReport) -> str:
    return (
        f"embedded {report.embedded:,}, cached {report.cached:,}, resumed {report.resumed:,}; "
        f"{report.tokens:,} tokens, $0.00; {format_seconds(report.wall_time_s)} on {report.where}; "
        f"manifest {report.manifest_path}"
    )


def _ray_address_set() -> bool:
    return bool(os.environ.get("RAY_ADDRESS"))


def _fail(message: str, code: int) -> int:
    _say(message)
    return code


def _say(message: str, *, prefix: str = "signal-hub-embeddings: ") -> None:
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
