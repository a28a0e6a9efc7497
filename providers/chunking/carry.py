"""The rows of unchanged files, taken from the previous output instead of being embedded again.

```python
for ids, vectors, dropped in previous_rows(Path("vectors.jsonl"), wanted_ids, 384):
    writer.write(ids, vectors, dropped)
```

Reads what the job writers wrote: JSONL rows (`embedding` as floats or base64) or a `.npy`
with its ids file. Rows come in the order of the old output, in blocks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["previous_lines", "previous_rows"]

_BLOCK = 1024

Rows = tuple[list[str | int], npt.NDArray[np.float32], list[int]]


def previous_rows(output: Path, wanted: set[str], dimensions: int, ids_file: Path | None = None) -> Iterator[Rows]:
    """Blocks of (ids, vectors, dropped tokens) of the rows of `output` whose id is in `wanted`.

    `ids_file`: a `.npy` output's ids, a JSON value a row.
    """
    if ids_file is not None:
        yield from _npy_rows(output, ids_file, wanted, dimensions)
    else:
        yield from _jsonl_rows(output, wanted, dimensions)


def _jsonl_rows(output: Path, wanted: set[str], dimensions: int) -> Iterator[Rows]:
    ids: list[str | int] = []
    vectors: list[npt.NDArray[np.float32]] = []
    dropped: list[int] = []
    with output.open("rb") as stream:
        for line in stream:
            row = json.loads(line)
            if row.get("id") not in wanted:
                continue
            embedding = row["embedding"]
            vector = (
                np.frombuffer(base64.b64decode(embedding), "<f4")
                if isinstance(embedding, str)
                else np.asarray(embedding, dtype=np.float32)
            )
            if vector.shape != (dimensions,):
                raise ValueError(f"{output}: a row of {vector.shape} where {dimensions} dimensions were written")
            ids.append(row["id"])
            vectors.append(vector)
            dropped.append(int(row.get("dropped_tokens", 0)))
            if len(ids) == _BLOCK:
                yield ids, np.stack(vectors), dropped
                ids, vectors, dropped = [], [], []
    if ids:
        yield ids, np.stack(vectors), dropped


def _npy_rows(output: Path, ids_file: Path, wanted: set[str], dimensions: int) -> Iterator[Rows]:
    matrix = np.load(output, mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape[1] != dimensions:
        raise ValueError(f"{output}: shape {matrix.shape}, not (rows, {dimensions})")
    with ids_file.open("rb") as stream:
        rows = [json.loads(line) for line in stream]
    if len(rows) != matrix.shape[0]:
        raise ValueError(f"{output}: {matrix.shape[0]} vectors but {len(rows)} ids")
    picked = []
    for index, row in enumerate(rows):
        chunk_id, lost = (row["id"], row.get("dropped_tokens", 0)) if isinstance(row, dict) else (row, 0)
        if chunk_id in wanted:
            picked.append((index, chunk_id, lost))
    for start in range(0, len(picked), _BLOCK):
        block = picked[start : start + _BLOCK]
        vectors = np.asarray(matrix[[index for index, _, _ in block]], dtype=np.float32)
        yield [chunk_id for _, chunk_id, _ in block], vectors, [int(lost) for _, _, lost in block]


def previous_lines(output: Path, wanted: set[str], base64: bool) -> Iterator[list[bytes]] | None:
    """Blocks of the JSONL rows of `output` whose id is in `wanted`, as they are; None when their
    embeddings are not in the encoding asked for (then they must be decoded and written again)."""
    with output.open("rb") as stream:
        first = stream.readline()
    if first and (b'"embedding":"' in first) != base64:
        return None
    return _lines(output, wanted)


def _lines(output: Path, wanted: set[str]) -> Iterator[list[bytes]]:
    decoder = json.JSONDecoder()
    block: list[bytes] = []
    with output.open("rb") as stream:
        for line in stream:
            if not line.startswith(b'{"id":'):
                raise ValueError(f"{output}: a row that does not start with its id")
            chunk_id, _ = decoder.raw_decode(line[6:200].decode("utf-8", errors="replace"))
            if chunk_id in wanted:
                block.append(line)
                if len(block) == _BLOCK:
                    yield block
                    block = []
    if block:
        yield block
