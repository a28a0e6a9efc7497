"""How the job runner reads a job's input: opened with the model's token budget, scanned, carried over.

```python
inputs = JobInputs(settings, provider_of)          # provider_of(engine, provider) -> EmbeddingProvider
job_input = inputs.open(source, output, "jsonl", options.to_column(), "local", "in-process", roots)  # "npy"
scan = inputs.scan(job_input)                     # counts and tokens before the job is queued
inputs.save_changes(job_id, job_input)            # what job_status reports as `changes`
```
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from providers.base import EmbeddingProvider
from providers.chunking.budget import chunk_budget
from providers.chunking.manifest import ManifestStore
from providers.errors import InputError
from providers.jobs.files import Chunk, Invalid
from providers.jobs.input_checks import open_check, output_files
from providers.jobs.paths import AllowedRoots
from providers.jobs.repository import JobInput, JobOptions
from providers.jobs.scan import InputScan, scan_input
from providers.jobs.writers import VectorWriter
from providers.settings import Settings

__all__ = ["JobInputs"]


class JobInputs:
    def __init__(self, settings: Settings, provider_of: Callable[[str, str | None], EmbeddingProvider]) -> None:
        self.settings = settings
        self.provider_of = provider_of
        """(engine, provider name) -> the provider a job of that engine gets."""
        self.manifests = ManifestStore(settings.resolved_data_dir / "chunk_manifests")
        self.changes_dir = settings.resolved_data_dir / "job_changes"

    def open(
        self,
        source: str,
        output: Path,
        fmt: str,
        column: str,
        provider: str,
        engine: str,
        roots: AllowedRoots,
        space: str | None = None,
    ) -> JobInput:
        """The job's input, its files sorted into unchanged (rows carried over) and to read.

        Each file is checked against `roots` again just before it is read, and opened without
        following a symlink.
        """
        options = JobOptions.from_column(column)
        chosen = self.provider_of(engine, provider)
        return JobInput.open(
            [source],
            output=output,
            budget=chunk_budget(chosen, self.settings, options.chunk_tokens),
            options=options,
            space=space or chosen.space,
            exclude=output_files(output, fmt),
            check=roots.check_file,
            manifests=self.manifests,
            reopen=open_check(roots),
        )

    def scan(self, job_input: JobInput) -> InputScan:
        return scan_input(job_input, self.settings.limits)

    def chunks(self, job_input: JobInput) -> Iterator[Chunk]:
        """The chunks to embed; a bad record fails the job (it was checked when the job started)."""
        for item in job_input.items(self.settings.limits):
            if isinstance(item, Invalid):
                raise InputError(f"{item}. Fix it and start the job again.")
            if isinstance(item, Chunk):
                yield item

    @staticmethod
    def carry(job_input: JobInput, writer: VectorWriter, dimensions: int) -> int:
        return job_input.write_carried(writer, dimensions)

    def save_changes(self, job_id: str, job_input: JobInput) -> None:
        """Keep what the job found changed (and skipped) for job_status, beside the job store."""
        if job_input.budget is None or not any(source.format == "chunks" for source in job_input.sources):
            return
        found = {**job_input.changes.to_json(), "skipped": dict(job_input.skipped)}
        self.changes_dir.mkdir(parents=True, exist_ok=True)
        target = self.changes_dir / f"{job_id}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(found), encoding="utf-8")
        os.replace(temporary, target)

    def saved_changes(self, job_id: str) -> dict[str, object] | None:
        with contextlib.suppress(OSError, ValueError):
            found = json.loads((self.changes_dir / f"{job_id}.json").read_text(encoding="utf-8"))
            return found if isinstance(found, dict) else None
        return None
