"""A job's input as the runner reads it: checked chunks, counted and priced up front, fingerprinted.

Every file is checked against the allowed roots again right before it is read, and opened
without following a symlink: a queued job can wait long, and its files may have been swapped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from providers.cost import batch_cost_usd, cost_usd
from providers.errors import InputError
from providers.jobs.files import Chunk, DuplicateIds, find_sources, read_chunks
from providers.jobs.paths import AllowedRoots
from providers.jobs.writers import ids_path
from providers.settings import InputLimits, Settings

__all__ = ["Scan", "estimate_usd", "fingerprint", "job_chunks", "output_files", "scan_chunks", "scan_input"]


@dataclass
class Scan:
    """What a job's input holds, found before the job is queued."""

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


def job_chunks(
    source: str, glob: str, output: Path, out_format: str, roots: AllowedRoots, limits: InputLimits
) -> Iterator[Chunk]:
    """The chunks of a job's input, each file checked again just before it is read; a bad record stops it."""
    excluded = output_files(output, out_format)
    for found in find_sources([source], "auto", glob, excluded, roots.check_file):
        assert found.path is not None  # a job never reads stdin
        checked = dataclasses.replace(found, real=roots.check_input(str(found.path)))
        for item in read_chunks(checked, limits):
            if not isinstance(item, Chunk):
                raise InputError(f"{item}. Fix it and start the job again.")
            yield item


def scan_input(source: str, glob: str, output: Path, out_format: str, roots: AllowedRoots, limits: InputLimits) -> Scan:
    total, tokens, duplicates = scan_chunks(job_chunks(source, glob, output, out_format, roots, limits))
    try:
        repeated = duplicates.describe() if duplicates.count else None
    finally:
        duplicates.close()
    return Scan(total, tokens, fingerprint(source, glob, output_files(output, out_format)), repeated)


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
