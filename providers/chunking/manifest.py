"""What the last complete run wrote to an output: each file's version and chunks, for the next run.

```python
store = ManifestStore(data_dir / "chunk_manifests")
previous = store.load(output, key)      # None: no complete run with these settings
store.save(output, Manifest(key, files, output_version=file_version(output)))
```

Kept under the data directory, one JSON file per output path. A manifest counts only with the
same settings (vector space, chunk budget, file filter) and while the output is exactly as that
run left it (size and mtime): then the rows of unchanged files can be taken from the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.chunking.chunker import FileChunk
from providers.chunking.source_file import FileVersion, file_version

__all__ = ["FileEntry", "Manifest", "ManifestStore", "chunk_from_json", "chunk_to_json"]

_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    relative: str
    version: FileVersion
    sha256: str
    chunks: tuple[FileChunk, ...]
    """Without their text (it is in the file, and the vectors in the output)."""


@dataclass
class Manifest:
    key: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    """By the file's absolute path."""
    output_version: FileVersion | None = None


def chunk_to_json(chunk: FileChunk) -> list[Any]:
    return [chunk.id, chunk.start_line, chunk.end_line, chunk.language, chunk.symbol, chunk.sha256, chunk.tokens]


def chunk_from_json(path: str, row: list[Any]) -> FileChunk:
    chunk_id, start, end, language, symbol, sha256, tokens = row
    return FileChunk(chunk_id, "", path, start, end, language, symbol, sha256, tokens)


class ManifestStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def file_for(self, output: Path) -> Path:
        name = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:32]
        return self.directory / f"{name}.json"

    def load(self, output: Path, key: str) -> Manifest | None:
        """The manifest of `output` if its settings are `key`; None when there is none or it is unreadable."""
        try:
            raw = json.loads(self.file_for(output).read_text(encoding="utf-8"))
            if raw.get("version") != _VERSION or raw.get("key") != key:
                return None
            files = {
                path: FileEntry(
                    entry["relative"],
                    FileVersion(*entry["version"]),
                    entry["sha256"],
                    tuple(chunk_from_json(entry["relative"], row) for row in entry["chunks"]),
                )
                for path, entry in raw["files"].items()
            }
            written = raw.get("output_version")
            return Manifest(key, files, FileVersion(*written) if written else None)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no usable state: the run is a cold one, and the cache still helps

    def save(self, output: Path, manifest: Manifest) -> None:
        """Write the manifest atomically, with the output's version as it is now."""
        manifest.output_version = file_version(output)
        raw = {
            "version": _VERSION,
            "key": manifest.key,
            "output": str(output),
            "output_version": [manifest.output_version.size, manifest.output_version.mtime_ns],
            "files": {
                path: {
                    "relative": entry.relative,
                    "version": [entry.version.size, entry.version.mtime_ns],
                    "sha256": entry.sha256,
                    "chunks": [chunk_to_json(chunk) for chunk in entry.chunks],
                }
                for path, entry in manifest.files.items()
            },
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.file_for(output)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=target.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump(raw, stream, separators=(",", ":"))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def forget(self, output: Path) -> None:
        with contextlib.suppress(OSError):
            self.file_for(output).unlink()
