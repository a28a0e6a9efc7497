"""Reading one source file for chunking: its bytes once, what identifies this version, and its chunks.

```python
read = read_file(Path("repo/pkg/a.py"), "pkg/a.py", budget)
read.sha256, read.chunks    # or read.skipped: "not UTF-8", "empty"
```
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from providers.chunking.budget import TokenBudget
from providers.chunking.chunker import FileChunk, chunk_text

__all__ = ["FileRead", "FileVersion", "file_version", "read_file"]


@dataclass(frozen=True)
class FileVersion:
    """What tells a file's versions apart without reading it."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileRead:
    path: Path
    relative: str
    version: FileVersion
    sha256: str
    chunks: list[FileChunk] = field(default_factory=list)
    skipped: str | None = None
    """Why the file gives no chunks (not UTF-8, blank), or None."""
    detail: str | None = None
    """More on why, e.g. where the bytes are not UTF-8."""


def file_version(path: Path) -> FileVersion:
    info = os.stat(path)
    return FileVersion(info.st_size, info.st_mtime_ns)


def read_file(path: Path, relative: str, budget: TokenBudget) -> FileRead:
    """Read and chunk one file; OSError when it cannot be read."""
    version = file_version(path)
    # Not following a symlink: the path was resolved and checked; one swapped in since is refused.
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as stream:
        data = stream.read()
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        detail = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        return FileRead(path, relative, version, digest, skipped="not UTF-8", detail=detail)
    chunks = chunk_text(text, relative, budget)
    return FileRead(path, relative, version, digest, chunks, skipped=None if chunks else "blank")
