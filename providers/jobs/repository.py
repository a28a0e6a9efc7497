"""A job's input as files and chunks: sources found, source files chunked, and only what changed read again.

```python
job_input = JobInput.open(["repo/"], output=Path("vectors.jsonl"), budget=budget, options=options,
                          manifests=ManifestStore(data_dir / "chunk_manifests"), space=space)
job_input.write_carried(writer, dimensions)     # rows of unchanged files, from the last output
for item in job_input.items(limits): ...         # Chunk, Invalid or Skipped, lazily
job_input.commit()                               # after the output is complete: the next run's state
```

`JobOptions` travel in the job store's `glob` column as JSON (a bare pattern is an old job's glob).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from providers.chunking.budget import TokenBudget
from providers.chunking.carry import previous_lines, previous_rows
from providers.chunking.incremental import Changes, IncrementalRun
from providers.chunking.manifest import ManifestStore
from providers.chunking.selection import DEFAULT_MAX_FILE_BYTES, FileFilter
from providers.chunking.source_file import file_version
from providers.chunking.totals import InputTotals
from providers.errors import InputError
from providers.jobs.files import Chunk, Invalid, Skipped, Source, checked, find_sources, read_chunks
from providers.jobs.writers import JsonlWriter, RowFields, VectorWriter, ids_path
from providers.settings import InputLimits

__all__ = ["JobInput", "JobOptions"]


@dataclass(frozen=True)
class JobOptions:
    """How a job picks and chunks its files."""

    filter: FileFilter = field(default_factory=FileFilter)
    chunk_tokens: int | None = None
    """None: the model's default (its window for the local model, 512 for remote ones)."""

    def to_column(self) -> str:
        return json.dumps({**self.filter.to_json(), "chunk_tokens": self.chunk_tokens}, sort_keys=True)

    @classmethod
    def from_column(cls, raw: str) -> JobOptions:
        if not raw.startswith("{"):  # a job stored before: one name pattern
            return cls(FileFilter(globs=() if raw == "*" else (raw,)))
        found = json.loads(raw)
        wanted = FileFilter(
            tuple(found.get("glob", ())),
            tuple(found.get("exclude", ())),
            found.get("max_bytes", DEFAULT_MAX_FILE_BYTES),
        )
        return cls(wanted, found.get("chunk_tokens"))


@dataclass
class JobInput:
    sources: list[Source]
    budget: TokenBudget | None
    run: IncrementalRun
    output: Path | None
    manifests: ManifestStore | None
    key: str
    skipped: Counter[str] = field(default_factory=Counter)
    fields: RowFields = field(default_factory=dict)
    """Each chunk's row fields from when it is read until its row is written."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Each chunk's tokens as the chunker counted them, while `totals` reads."""
    reopen: Callable[[Path], Path] | None = None
    """Set: each file is checked with it (its real path, or InputError) just before it is read."""

    @classmethod
    def open(
        cls,
        inputs: Sequence[str],
        *,
        output: Path | None,
        budget: TokenBudget | None,
        options: JobOptions,
        space: str,
        fmt: str = "auto",
        exclude: frozenset[Path] = frozenset(),
        check: Callable[[Path], None] | None = None,
        manifests: ManifestStore | None = None,
        reopen: Callable[[Path], Path] | None = None,
    ) -> JobInput:
        """Find the sources and sort the chunked files into unchanged (carried) and to read."""
        skipped: Counter[str] = Counter()
        sources = list(find_sources(inputs, fmt, options.filter, exclude, check, skipped))
        key = json.dumps([space, budget and (budget.max_tokens, budget.tokenizer), options.to_column()])
        previous = manifests.load(output, key) if manifests is not None and output is not None else None
        intact = previous is not None and output is not None and _intact(output, previous.output_version)
        run = IncrementalRun(previous, output_intact=intact)
        files = [(s.path, s.relative or s.path.name) for s in sources if s.format == "chunks" and s.path is not None]
        run.plan([(path.resolve(), relative) for path, relative in files])
        return cls(sources, budget, run, output, manifests, key, skipped, reopen=reopen)

    @property
    def changes(self) -> Changes:
        return self.run.changes

    def carried_count(self) -> int:
        return self.run.carried_count()

    def items(self, limits: InputLimits, *, counting: bool = False) -> Iterator[Chunk | Invalid | Skipped]:
        """Every chunk to embed, in source order; carried files give none (their rows come from the output)."""
        for source in self.sources:
            if source.format != "chunks":
                yield from read_chunks(self._checked(source), limits)
                continue
            assert source.path is not None and self.budget is not None
            path = source.path.resolve()
            if str(path) in self.run.carried:
                continue
            self._checked(source)  # read_file opens the resolved path without following a symlink
            read = self.run.read(path, source.relative or source.path.name, self.budget)
            if read.skipped is not None and not source.in_directory:  # a file named alone: say why
                yield Invalid(source.name, f"{read.detail or read.skipped}; leave it out of the inputs")
            elif read.skipped is not None:
                self.skipped[read.skipped] += 1
                yield Skipped(source.name, read.skipped)
            for chunk in read.chunks:
                item = checked(chunk.id, chunk.text, f"{source.name} lines {chunk.start_line}-{chunk.end_line}", limits)
                if isinstance(item, Chunk):
                    self.fields[chunk.id] = chunk.row()
                    if counting:
                        self.tokens[chunk.id] = chunk.tokens
                yield item

    def _checked(self, source: Source) -> Source:
        """The source to read, checked again with `reopen` (its files may have changed since it was found)."""
        if self.reopen is None or source.path is None:
            return source
        return dataclasses.replace(source, real=self.reopen(source.path))

    def totals(
        self, limits: InputLimits, invalid: Callable[[Invalid], None], seen: Callable[[Chunk], object]
    ) -> InputTotals:
        """Read the whole input once (nothing is sent): counts and tokens, for a dry run or an estimate.

        `invalid` is told of each bad record (it may raise); `seen` of each chunk to embed.
        """
        totals = InputTotals(files=len(self.run.carried), chunks=self.carried_count())
        counted: set[str] = set()
        for item in self.items(limits, counting=True):
            if isinstance(item, Invalid):
                totals.failed += 1
                invalid(item)
            elif isinstance(item, Chunk):
                seen(item)
                found = self.fields.pop(item.id, None)
                path = str(found["path"]) if found else None
                tokens = self.tokens.pop(str(item.id), None)
                totals.add(path, self._tokens(item.text) if tokens is None else tokens)
                if path is not None:
                    counted.add(path)
        totals.files += len(counted) + sum(1 for source in self.sources if source.format != "chunks")
        return totals

    def _tokens(self, text: str) -> int:
        if self.budget is None:
            return len(text.encode()) // 3 + 1
        return self.budget.count(text)

    def write_carried(self, writer: VectorWriter, dimensions: int) -> int:
        """Write the previous output's rows of unchanged files; how many."""
        if not self.run.carried or self.output is None:
            return 0
        rows = {chunk.id: chunk.row() for chunk in self.run.carried_chunks()}
        ids_file = ids_path(self.output) if self.output.suffix.lower() == ".npy" else None
        written = 0
        try:
            if isinstance(writer, JsonlWriter) and ids_file is None:
                lines = previous_lines(self.output, set(rows), writer.encoding == "base64")
                if lines is not None:  # the rows as they are: nothing to decode and format again
                    for block in lines:
                        writer.write_lines(block)
                        written += len(block)
                    if written != len(rows):
                        raise ValueError(f"it holds {written:,} of the {len(rows):,} rows its last run wrote")
                    return written
            for ids, vectors, dropped in previous_rows(self.output, set(rows), dimensions, ids_file):
                for chunk_id in ids:
                    self.fields[chunk_id] = rows[str(chunk_id)]
                writer.write(ids, vectors, dropped)
                written += len(ids)
            if written != len(rows):
                raise ValueError(f"it holds {written:,} of the {len(rows):,} rows its last run wrote")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if self.manifests is not None:  # the next run reads every file again (the cache still helps)
                self.manifests.forget(self.output)
            raise InputError(f"cannot take the unchanged rows from {self.output} ({exc}); run the job again.") from exc
        return written

    def commit(self) -> None:
        """Save the state the output now reflects (only after the output is complete)."""
        if self.manifests is not None and self.output is not None and self.budget is not None:
            self.manifests.save(self.output, self.run.manifest(self.key))


def _intact(output: Path, version: object) -> bool:
    try:
        return file_version(output) == version
    except OSError:
        return False
