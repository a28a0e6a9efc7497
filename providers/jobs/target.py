"""A job's output file: checked when the job is queued, again when it starts and before its final rename.

Between those moments a queued job may wait long, and the way to its output may change: a
directory swapped for a symlink leading elsewhere is refused (`AllowedRoots.check_unmoved`), and
the writers rename through the directory they opened (see `writers`).
"""

from __future__ import annotations

from pathlib import Path

from providers.jobs.paths import AllowedRoots
from providers.jobs.store import JobRecord
from providers.jobs.writers import JsonlWriter, NpyWriter, RowFields, VectorWriter

__all__ = ["JobWriter", "check_target", "commit_output", "open_writer"]

JobWriter = JsonlWriter | NpyWriter


def check_target(
    roots: AllowedRoots, output: str, source: Path, out_format: str, overwrite: bool, data_dir: Path
) -> Path:
    """`output` resolved, if a job reading `source` may write it (see `outputs.check_output_target`)."""
    return roots.check_output(output, [source], out_format=out_format, data_dir=data_dir, overwrite=overwrite)


def open_writer(
    job: JobRecord, roots: AllowedRoots, dimensions: int, fields: RowFields | None = None, *, continuing: bool = False
) -> JobWriter:
    """The writer of the job's `.partial`, once the way to it is checked again (`fields`: see `JobInput`).

    `continuing`: the `.partial` a stopped run kept is left as it is (see `JsonlWriter.continue_from`).
    """
    output = Path(job.output)
    roots.check_unmoved(output.parent)
    if job.format == "npy":
        return NpyWriter(output, dimensions, fields, continuing=continuing)
    return JsonlWriter(output, job.space, fields=fields, continuing=continuing)


def commit_output(job: JobRecord, writer: VectorWriter, roots: AllowedRoots, data_dir: Path, overwrite: bool) -> None:
    """Put the output in place, once its path is checked again: a file put there since is not replaced
    (unless `overwrite`, and then only a job's output)."""
    roots.check_unmoved(Path(job.output).parent)
    check_target(roots, job.output, Path(job.input), job.format, overwrite, data_dir)
    writer.commit()
