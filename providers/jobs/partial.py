"""What a stopped job's `.partial` holds: its whole rows, as a stop or a kill -9 left them.

```python
kept = kept_jsonl(partial_file, space, dimensions, "float", head=carried)   # or kept_npy(ids, npy, ...)
kept.count, kept.end        # whole rows, and the bytes of the rows file they take
```

A job stopped to exit keeps `<output>.partial` (a `.npy` job its `<stem>.ids.jsonl.partial` too);
its resume keeps the whole rows at its start and writes on after them. A kill can tear the last
row: a line without its end, a vector without its id or an id without its vector; what is not a
whole row is cut off. Rows that cannot be this job's (another space, another size of vector) make
`foreign` say why, and the resume starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

__all__ = ["IdDigest", "KeptRows", "kept_jsonl", "kept_npy"]

_ID_START = b'{"id":'
_decoder = json.JSONDecoder()


class IdDigest:
    """Ids in order, as one hash: the kept rows and the input's chunks are compared without holding either."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def add(self, chunk_id: str | int) -> None:
        self._hash.update(json.dumps(chunk_id).encode() + b"\n")  # json: the id 1 is not the id "1"

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class KeptRows:
    """The whole rows at the start of a `.partial`."""

    count: int = 0
    end: int = 0
    """Bytes of the rows file (the JSONL, or a `.npy`'s ids) the whole rows take."""
    head: frozenset[str | int] = frozenset()
    """The ids of the first rows, as many as a file-tree job carries from its last output (in its order)."""
    digest: str = IdDigest().hexdigest()
    """The ids of the other rows, in order (`IdDigest`)."""
    truncated: int = 0
    dropped_tokens: int = 0
    foreign: str | None = None
    """Why these rows cannot be this job's; None when they may be."""


class _Counter:
    def __init__(self, head: int) -> None:
        self.head_size = head
        self.head: set[str | int] = set()
        self.rest = IdDigest()
        self.count = self.truncated = self.dropped_tokens = 0

    def add(self, chunk_id: str | int, dropped: int) -> None:
        if self.count < self.head_size:
            self.head.add(chunk_id)
        else:
            self.rest.add(chunk_id)
        self.count += 1
        self.truncated += dropped > 0
        self.dropped_tokens += dropped

    def kept(self, end: int, foreign: str | None = None) -> KeptRows:
        if foreign is not None:
            return KeptRows(foreign=foreign)
        return KeptRows(
            self.count, end, frozenset(self.head), self.rest.hexdigest(), self.truncated, self.dropped_tokens
        )


def kept_jsonl(file: IO[bytes], space: str, dimensions: int, encoding: str, *, head: int = 0) -> KeptRows:
    """The whole rows of a JSONL `.partial`: each ends its line and is a row of `space` with a vector in `encoding`."""
    counter, end = _Counter(head), 0
    for line in _lines(file):
        if not line.endswith(b"}\n"):
            break  # torn by a kill: the rows before it are whole
        row = _jsonl_row(line, space, dimensions, encoding)
        if isinstance(row, str):
            return counter.kept(0, f"row {counter.count + 1} {row}")
        counter.add(*row)
        end += len(line)
    return counter.kept(end)


def _jsonl_row(line: bytes, space: str, dimensions: int, encoding: str) -> tuple[str | int, int] | str:
    """(id, dropped tokens) of a row `JsonlWriter` writes, or what is wrong with it."""
    tail_at = line.rfind(b',"space":')
    vector_at = line.rfind(b',"embedding":', 0, max(tail_at, 0))
    if not line.startswith(_ID_START) or vector_at < 0:
        return "is not a row of vectors"
    try:
        chunk_id, _ = _decoder.raw_decode(line[len(_ID_START) : vector_at].decode())
        tail = json.loads(b"{" + line[tail_at + 1 :])
    except ValueError:
        return "is not a row of vectors"
    if tail.get("space") != space:
        return f"is of the space {tail.get('space')!r}, not {space!r}"
    vector = line[vector_at + len(b',"embedding":') : tail_at]
    if encoding == "float":
        whole = vector.startswith(b"[") and vector.endswith(b"]") and vector.count(b",") + 1 == dimensions
    else:
        whole = vector.startswith(b'"') and len(vector) == 2 + 4 * -(-4 * dimensions // 3)
    if not whole:
        return f"has no {encoding} vector of {dimensions} dimensions"
    if isinstance(chunk_id, bool) or not isinstance(chunk_id, str | int):
        return "has no id"
    return chunk_id, int(tail.get("dropped_tokens", 0))


def kept_npy(ids: IO[bytes], npy: IO[bytes], header: bytes, dimensions: int, *, head: int = 0) -> KeptRows:
    """The whole rows of a `.npy` `.partial` that starts with `header`: an id line and a vector each."""
    npy.seek(0)
    if npy.read(len(header)) != header:
        return KeptRows(foreign=f"its .npy is not one of float32 vectors of {dimensions} dimensions")
    vectors = max(os.fstat(npy.fileno()).st_size - len(header), 0) // (4 * dimensions)
    counter, end = _Counter(head), 0
    for line in _lines(ids):
        if counter.count == vectors or not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except ValueError:
            return counter.kept(0, f"line {counter.count + 1} of its ids is not JSON")
        chunk_id, dropped = (row.get("id"), row.get("dropped_tokens", 0)) if isinstance(row, dict) else (row, 0)
        if isinstance(chunk_id, bool) or not isinstance(chunk_id, str | int):
            return counter.kept(0, f"line {counter.count + 1} of its ids has no id")
        counter.add(chunk_id, int(dropped))
        end += len(line)
    return counter.kept(end)


def _lines(file: IO[bytes]) -> Iterator[bytes]:
    file.seek(0)
    while line := file.readline():  # not `yield from file`: leaving the loop early would close the file
        yield line
