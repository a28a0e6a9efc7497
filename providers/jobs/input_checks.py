"""What a job's input is checked and priced by: the files it writes (never read), its fingerprint, its price.

A job's input files are checked against the allowed roots again right before each is read, and
opened without following a symlink (`opened_checked`): a queued job can wait long, and its files
may have been swapped meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from providers.cost import batch_cost_usd, cost_usd
from providers.jobs.files import find_sources
from providers.jobs.paths import AllowedRoots
from providers.jobs.repository import JobOptions
from providers.jobs.writers import ids_path
from providers.settings import Settings

__all__ = ["estimate_usd", "fingerprint", "open_check", "output_files"]


def open_check(roots: AllowedRoots) -> Callable[[Path], Path]:
    """`check(path)`: the file resolved and checked against `roots` as a named input, just before it is read."""
    return lambda path: roots.check_input(str(path))


def output_files(output: Path, out_format: str) -> frozenset[Path]:
    """The files a job writes, which it never reads even when they lie in its input directory."""
    files = [output, ids_path(output)] if out_format == "npy" else [output]
    return frozenset([*files, *(f.with_name(f.name + ".partial") for f in files)])


def fingerprint(source: str, glob: str, excluded: frozenset[Path]) -> str:
    """Each input file's path, size and modification time: a changed input is a new job."""
    digest = hashlib.sha256()
    for found in find_sources([source], "auto", JobOptions.from_column(glob).filter, excluded):
        if found.path is not None:
            info = found.path.stat()
            digest.update(json.dumps([str(found.path), info.st_size, info.st_mtime_ns]).encode())
    return digest.hexdigest()


def estimate_usd(provider: str, model: str, tokens: int, settings: Settings, *, batch: bool = False) -> float | None:
    """What `tokens` cost synchronously, or through the Batch API (`batch`: OpenAI only, half price)."""
    return (batch_cost_usd if batch else cost_usd)(provider, model, tokens, settings)
