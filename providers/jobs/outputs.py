"""Where a job may write its vectors: never into its input or the data directory, over a file only when asked.

```python
check_output_target(target, "jsonl", inputs=[source], data_dir=settings.resolved_data_dir, overwrite=False)
```

Refused: an output inside one of the job's input directories (a later job of that directory would
read it) or inside the data directory (the ledger, the cache and the job store live there); an
existing file, unless the caller passes overwrite; and, even then, a file a job did not write.
A job's own output is known by its shape:
- JSONL: its first line is a row of ours, `{"id", "embedding", "space", "truncated", "dropped_tokens"}`
  (a source file's chunk adds `path`, `start_line` and the like);
- `.npy`: a 2-D little-endian float32 array whose `<stem>.ids.jsonl` beside it has one line per row;
  an ids file alone: its first line is an id (a JSON string or integer, or `{"id": ...}`).
An empty file holds nothing to lose and may be replaced as well.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy.lib.format as npy_format

from providers.errors import InputError
from providers.jobs.writers import ids_path

__all__ = ["ROW_FIELDS", "check_cli_output", "check_output_target", "is_job_output"]

ROW_FIELDS = frozenset({"id", "embedding", "space", "truncated", "dropped_tokens"})
"""The keys of every JSONL row a job writes (see `writers.JsonlWriter`)."""

_FIRST_LINE_BYTES = 1 << 20


def check_output_target(
    target: Path,
    out_format: str,
    *,
    inputs: Sequence[Path],
    data_dir: Path | None,
    overwrite: bool,
    shown: str | None = None,
    flag: str = "overwrite: true",
) -> None:
    """Refuse `target` (resolved) as the output of a job reading `inputs` (resolved); see the module doc.

    `shown` names the output in messages (default: `target`), `flag` says how to ask for overwriting.
    """
    shown = shown or str(target)
    for source in inputs:
        if target == source:
            raise InputError(f"{shown} is also the input; write the vectors elsewhere.")
        if source.is_dir() and target.is_relative_to(source):
            raise InputError(
                f"{shown} is inside the input directory {source}: a later job of it would read the vectors "
                "as input; write them outside it."
            )
    if data_dir is not None and target.is_relative_to(data_dir.resolve()):
        raise InputError(
            f"{shown} is inside the data directory {data_dir}, which holds the ledger, the cache and the jobs; "
            "write the vectors elsewhere."
        )
    for path in job_files(target, out_format):
        if not (path.exists() or path.is_symlink()):
            continue
        if not stat.S_ISREG(path.lstat().st_mode):
            raise InputError(f"{shown}: {path.name} exists and is not a regular file; choose another output.")
        if path.stat().st_size == 0:
            continue
        if not overwrite:
            raise InputError(f"{shown}: {path.name} exists; choose another output, or pass {flag} to replace it.")
        if not is_job_output(path, out_format, target):
            raise InputError(
                f"{shown}: {path.name} exists and was not written by a job ({_expected(path, out_format)}); "
                f"it is never replaced, even with {flag}: choose another output."
            )


def check_cli_output(output: Path, inputs: Sequence[str], data_dir: Path, *, overwrite: bool) -> None:
    """The `embed` command's `--output`, checked as a job's output is (with `--overwrite`)."""
    sources = [Path(raw).resolve() for raw in inputs if raw != "-"]
    if output.resolve() in sources:
        raise InputError(f"--output {output} is also an input; write the vectors elsewhere.")
    out_format = "npy" if output.suffix.lower() == ".npy" else "jsonl"
    shown = f"--output {output}"
    check_output_target(
        output.resolve(),
        out_format,
        inputs=sources,
        data_dir=data_dir,
        overwrite=overwrite,
        shown=shown,
        flag="--overwrite",
    )


def job_files(target: Path, out_format: str) -> list[Path]:
    """The files a job with output `target` leaves: the vectors, and for `.npy` the ids beside them."""
    return [target, ids_path(target)] if out_format == "npy" else [target]


def is_job_output(path: Path, out_format: str, target: Path | None = None) -> bool:
    """Whether the existing file `path` has the shape of a job's output (of `target`, for an ids file)."""
    try:
        if out_format != "npy":
            return _is_jsonl_rows(path)
        target = target or path
        if path != target:  # the ids file
            return _npy_rows(target) == _line_count(path) if target.exists() else _is_ids_file(path)
        rows = _npy_rows(path)
        return rows is not None and ids_path(path).exists() and _line_count(ids_path(path)) == rows
    except (OSError, ValueError):
        return False


def _is_jsonl_rows(path: Path) -> bool:
    record = json.loads(_first_line(path))
    return isinstance(record, dict) and set(record) >= ROW_FIELDS and isinstance(record["embedding"], list | str)


def _is_ids_file(path: Path) -> bool:
    record = json.loads(_first_line(path))
    if isinstance(record, dict):
        record = record.get("id")
    return isinstance(record, str | int) and not isinstance(record, bool)


def _npy_rows(path: Path) -> int | None:
    """Rows of a 2-D little-endian float32 `.npy` (the header only is read), else None."""
    with path.open("rb") as file:
        version = npy_format.read_magic(file)
        if version not in ((1, 0), (2, 0)):
            return None
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(file)
    if fortran or dtype.str != "<f4" or len(shape) != 2:
        return None
    return int(shape[0])


def _first_line(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.readline(_FIRST_LINE_BYTES)


def _line_count(path: Path) -> int:
    with path.open("rb") as file:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))


def _expected(path: Path, out_format: str) -> str:
    if out_format != "npy":
        return "its first line is not a row of vectors"
    if path.suffix.lower() == ".npy":
        return "not a float32 array with its ids beside it"
    return "not the ids of the .npy beside it"
