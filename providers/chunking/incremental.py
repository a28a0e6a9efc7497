"""One run over a job's chunked files: which to read, which rows to carry from the last output, what changed.

```python
run = IncrementalRun(previous, output_intact=True)
run.plan(files)                         # stat each file; hash only those whose size or mtime moved
for read in run.changed_files(budget):  # read and chunk the files to embed (new or changed)
    ...
run.carried_ids()                       # rows the previous output already holds for unchanged files
run.changes                             # files and chunks added, changed, removed, unchanged
run.manifest(key)                       # the state to save once the output is complete
```
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from providers.chunking.budget import TokenBudget
from providers.chunking.chunker import FileChunk
from providers.chunking.manifest import FileEntry, Manifest
from providers.chunking.source_file import FileRead, file_version, read_file

__all__ = ["Changes", "IncrementalRun"]


@dataclass
class Changes:
    """What differs from the last complete run to the same output (all "added" on a first run)."""

    files_added: int = 0
    files_changed: int = 0
    files_removed: int = 0
    files_unchanged: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_unchanged: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"files: {self.files_added:,} added, {self.files_changed:,} changed, {self.files_removed:,} removed, "
            f"{self.files_unchanged:,} unchanged; chunks: {self.chunks_added:,} added, "
            f"{self.chunks_removed:,} removed, {self.chunks_unchanged:,} unchanged"
        )


@dataclass
class IncrementalRun:
    previous: Manifest | None
    output_intact: bool
    """Whether the previous output is as its manifest says: only then are its rows carried over."""
    changes: Changes = field(default_factory=Changes)
    carried: dict[str, FileEntry] = field(default_factory=dict)
    """Unchanged files whose rows come from the previous output, by path."""
    to_read: list[tuple[Path, str]] = field(default_factory=list)
    entries: dict[str, FileEntry] = field(default_factory=dict)
    """The new manifest's files, as they are read."""

    def plan(self, files: list[tuple[Path, str]]) -> None:
        """Sort `files` into carried (unchanged) and to read; count removed files."""
        old = self.previous.files if self.previous is not None else {}
        seen = set()
        for path, relative in files:
            key = str(path)
            seen.add(key)
            entry = old.get(key)
            if entry is None or entry.relative != relative:
                self.to_read.append((path, relative))
                continue
            try:
                version = file_version(path)
                same = version == entry.version or _sha256(path) == entry.sha256
            except OSError:
                same = False
            if same and self.output_intact:
                self.carried[key] = self.entries[key] = FileEntry(relative, version, entry.sha256, entry.chunks)
                self.changes.files_unchanged += 1
                self.changes.chunks_unchanged += len(entry.chunks)
            else:
                self.to_read.append((path, relative))
        for key, entry in old.items():
            if key not in seen:
                self.changes.files_removed += 1
                self.changes.chunks_removed += len(entry.chunks)

    def changed_files(self, budget: TokenBudget) -> Iterator[FileRead]:
        """Read and chunk each file to embed, counting how its chunks differ from the last run's."""
        for path, relative in self.to_read:
            yield self.read(path, relative, budget)

    def read(self, path: Path, relative: str, budget: TokenBudget) -> FileRead:
        """Read and chunk one file to embed, and note it for the next run."""
        read = read_file(path, relative, budget)
        key = str(path)
        if key not in self.entries:  # read a second time (counted, then embedded): counted once
            self._count(self.previous.files.get(key) if self.previous is not None else None, read)
        chunks = tuple(replace(chunk, text="") for chunk in read.chunks)
        self.entries[key] = FileEntry(relative, read.version, read.sha256, chunks)
        return read

    def _count(self, before: FileEntry | None, read: FileRead) -> None:
        changes = self.changes
        if before is None:
            changes.files_added += 1
            changes.chunks_added += len(read.chunks)
            return
        if before.sha256 == read.sha256:
            changes.files_unchanged += 1
            changes.chunks_unchanged += len(read.chunks)
            return
        changes.files_changed += 1
        old = {(chunk.id, chunk.sha256) for chunk in before.chunks}
        new = {(chunk.id, chunk.sha256) for chunk in read.chunks}
        changes.chunks_added += len(new - old)
        changes.chunks_removed += len(old - new)
        changes.chunks_unchanged += len(new & old)

    def carried_chunks(self) -> Iterator[FileChunk]:
        for entry in self.carried.values():
            yield from entry.chunks

    def carried_count(self) -> int:
        return sum(len(entry.chunks) for entry in self.carried.values())

    def manifest(self, key: str) -> Manifest:
        return Manifest(key, dict(self.entries))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
