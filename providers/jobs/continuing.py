"""A job's output as its run starts: rows kept from its `.partial` or carried over, and the chunks left.

```python
output = open_output(inputs, job, roots, dimensions, tally, continuing=True)
await engine.run(engine_job, output.chunks, output.writer, tally, on_progress)
```

A resumed job continues the `.partial` its stopped run kept when the whole rows there are the
first rows its input gives now (the same ids in the same order): those chunks are neither
embedded nor looked up again, and count as done (`cached`, as rows carried over do). Otherwise it
starts over, and the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from providers.jobs.files import Chunk
from providers.jobs.inputs import JobInputs
from providers.jobs.partial import IdDigest, KeptRows
from providers.jobs.paths import AllowedRoots
from providers.jobs.pipeline import Tally
from providers.jobs.repository import JobInput
from providers.jobs.store import JobRecord
from providers.jobs.target import JobWriter, open_writer
from providers.jobs.writers import RowFields

__all__ = ["JobOutput", "open_output"]

logger = logging.getLogger("providers.jobs.runner")


@dataclass
class JobOutput:
    job_input: JobInput
    writer: JobWriter
    chunks: Iterator[Chunk]
    """The chunks left to embed."""


def open_output(
    inputs: JobInputs, job: JobRecord, roots: AllowedRoots, dimensions: int, tally: Tally, *, continuing: bool
) -> JobOutput:
    """The job's input and writer, the rows already done in place (counted in `tally`), and the chunks left.

    `continuing`: the job ran before, and its `.partial` may hold rows to keep. `roots` are the
    server's: a resumed job may not reach further than a new one.
    """
    job_input = _open_input(inputs, job, roots)
    writer = open_writer(job, roots, dimensions, job_input.fields, continuing=continuing)
    try:
        if continuing:
            kept = writer.kept_rows(dimensions, head=job_input.carried_count())
            if kept.count or kept.foreign:
                left = _after_kept(inputs, job_input, kept)
                if not isinstance(left, str):
                    writer.continue_from(kept)
                    tally.cached += kept.count
                    tally.truncated += kept.truncated
                    tally.dropped_tokens += kept.dropped_tokens
                    return JobOutput(job_input, writer, left)
                logger.warning("job %s starts over: the rows of %s.partial are not kept (%s)", job.id, job.output, left)
                job_input = _open_input(inputs, job, roots, fields=job_input.fields)  # the first was read in part
            writer.continue_from(KeptRows())
        tally.cached += inputs.carry(job_input, writer, dimensions)
        return JobOutput(job_input, writer, inputs.chunks(job_input))
    except BaseException:
        writer.discard()
        raise


def _open_input(inputs: JobInputs, job: JobRecord, roots: AllowedRoots, fields: RowFields | None = None) -> JobInput:
    job_input = inputs.open(
        job.input, Path(job.output), job.format, job.glob, job.provider, job.engine, roots, job.space
    )
    if fields is not None:  # the writer's: it takes each row's fields from there
        fields.clear()
        job_input.fields = fields
    return job_input


def _after_kept(inputs: JobInputs, job_input: JobInput, kept: KeptRows) -> Iterator[Chunk] | str:
    """The chunks after the kept rows, or why the kept rows are not the first rows the input gives now."""
    if kept.foreign is not None:
        return kept.foreign
    carried = {chunk.id for chunk in job_input.run.carried_chunks()}
    if kept.count < len(carried):
        return "they end among the rows carried from the last output"
    if kept.head != carried:
        return "their first rows are not those carried from the last output"
    chunks, digest = inputs.chunks(job_input), IdDigest()
    for _ in range(kept.count - len(carried)):
        chunk = next(chunks, None)
        if chunk is None:
            return "there are more of them than the input gives now"
        digest.add(chunk.id)
        job_input.fields.pop(chunk.id, None)  # its row is there: its fields are not wanted
    if digest.hexdigest() != kept.digest:
        return "they are not the first rows the input gives now (the same ids in the same order)"
    return chunks
