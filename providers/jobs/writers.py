"""Writing a job's vectors: JSONL rows, or a float32 `.npy` with its ids beside it.

Writers put vectors in `<output>.partial` (locked against a second run), renamed only when
complete; each row says whether its text was cut to the model's window (`truncated`,
`dropped_tokens`). A job stopped to exit keeps its `.partial` (`keep_partial`); its resume opens it
`continuing`, and goes on after the whole rows it holds (`kept_rows`, `continue_from`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import IO, Literal, Protocol

import numpy as np
import numpy.lib.format as npy_format
import numpy.typing as npt

from providers.errors import ConfigurationError, InputError
from providers.jobs.partial import KeptRows, kept_jsonl, kept_npy

__all__ = ["JsonlWriter", "NpyWriter", "RowFields", "VectorEncoding", "VectorWriter", "ids_path", "npy_header"]

VectorEncoding = Literal["float", "base64"]
RowFields = MutableMapping[str | int, Mapping[str, object]]
"""Fields a row carries beside its vector (a chunk's path, lines, symbol...), by id: taken as rows are written."""

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class VectorWriter(Protocol):
    def write(self, ids: Sequence[str | int], vectors: npt.NDArray[np.float32], dropped: Sequence[int]) -> None:
        """Rows in input order; `dropped[i]`: tokens of row i's text the model never saw (0: all of it)."""

    def commit(self) -> None: ...
    def discard(self) -> None: ...
    def keep_partial(self) -> None:
        """Close, leaving the `.partial` for a resume to continue."""


class _PartialFile:
    """`<path>.partial`, locked against a second run writing the same output, renamed when complete.

    Emptied once locked, unless `continuing`: then it is left as it is, for `cut` to keep its whole rows.

    Made and renamed through a descriptor of its directory, opened once: a directory on the path
    swapped for a symlink later cannot send the file elsewhere, and the rename checks the path
    still leads to that directory. A symlink in place of the `.partial` itself is never followed.
    """

    def __init__(self, path: Path, *, continuing: bool = False) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._dir = os.open(path.parent, os.O_RDONLY | _O_DIRECTORY)
        try:
            fd = os.open(self.partial.name, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o644, dir_fd=self._dir)
        except BaseException:
            os.close(self._dir)
            raise
        try:
            _lock(fd, path)
            if not continuing:  # only now: truncating first would spoil the file of a run holding the lock
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            os.close(self._dir)
            raise
        self.file = os.fdopen(fd, "r+b")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        opened, now = os.fstat(self._dir), os.stat(self.path.parent)
        if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
            raise InputError(
                f"{self.path.parent} is no longer the directory the output was started in (now it leads to "
                f"{os.path.realpath(self.path.parent)}); the vectors are not written there."
            )
        os.rename(self.partial.name, self.path.name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        self._close()

    def discard(self) -> None:
        if self._dir >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial.name, dir_fd=self._dir)
        self._close()

    def cut(self, size: int) -> None:
        """Keep the first `size` bytes, and write on after them."""
        self.file.flush()
        os.ftruncate(self.file.fileno(), size)
        self.file.seek(size)

    def keep(self) -> None:
        self._close()

    def _close(self) -> None:
        self.file.close()
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows has no flock: no check there
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigurationError(f"another run is writing {path}; wait for it or choose another --output.") from None


class JsonlWriter:
    """A `{"id", "embedding", "space", "truncated", "dropped_tokens"}` line per vector, to a file or stdout.

    `encoding="base64"` writes each embedding as base64 of little-endian float32, as the MCP tools
    do: about 2.5x smaller and 20x faster to write than decimals.
    """

    def __init__(
        self,
        path: Path | None,
        space: str,
        encoding: VectorEncoding = "float",
        fields: RowFields | None = None,
        *,
        continuing: bool = False,
    ) -> None:
        self._fields = fields
        self._target = None if path is None else _PartialFile(path, continuing=continuing)
        self._out: IO[bytes] = sys.stdout.buffer if self._target is None else self._target.file
        self._space_name = space
        self._space = f',"space":{json.dumps(space)}'
        self._encoding = encoding
        self._numbers = ""

    def write(self, ids: Sequence[str | int], vectors: npt.NDArray[np.float32], dropped: Sequence[int]) -> None:
        if self._encoding == "base64":
            little = np.ascontiguousarray(vectors, dtype="<f4")
            embeddings = [f'"{base64.b64encode(row.tobytes()).decode()}"' for row in little]
        else:
            # 9 significant digits give back every float32 exactly; one %-format a row is about 3x
            # faster than json.dumps of the floats, and the lines are 40% shorter.
            if self._numbers.count("%") != vectors.shape[1]:
                self._numbers = ",".join(["%.9g"] * vectors.shape[1])
            embeddings = [f"[{self._numbers % tuple(vector)}]" for vector in vectors.tolist()]
        lines = [
            f'{{"id":{json.dumps(chunk_id)}{self._extra(chunk_id)},"embedding":{embedding}{self._space},'
            f'"truncated":{"true" if lost else "false"},"dropped_tokens":{lost}}}\n'
            for chunk_id, embedding, lost in zip(ids, embeddings, dropped, strict=True)
        ]
        self._out.write("".join(lines).encode())
        self._out.flush()

    @property
    def encoding(self) -> VectorEncoding:
        return self._encoding

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Rows this writer wrote before (in the same encoding and space), copied as they are."""
        self._out.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
        self._out.flush()

    def _extra(self, chunk_id: str | int) -> str:
        found = self._fields.pop(chunk_id, None) if self._fields else None
        return f",{json.dumps(found)[1:-1]}" if found else ""

    def kept_rows(self, dimensions: int, head: int = 0) -> KeptRows:
        """The whole rows of the `.partial` opened `continuing` (`head`: see `KeptRows.head`)."""
        assert self._target is not None
        return kept_jsonl(self._target.file, self._space_name, dimensions, self._encoding, head=head)

    def continue_from(self, kept: KeptRows) -> None:
        """Keep the `.partial`'s first `kept` rows (none: `KeptRows()`) and write on after them."""
        assert self._target is not None
        self._target.cut(kept.end)

    def commit(self) -> None:
        if self._target is not None:
            self._target.commit()

    def discard(self) -> None:
        if self._target is not None:
            self._target.discard()

    def keep_partial(self) -> None:
        if self._target is not None:
            self._target.keep()


class NpyWriter:
    """A float32 `.npy` of shape (rows, dimensions), and `<stem>.ids.jsonl` with a JSON id per row.

    A row whose text was cut has `{"id": ..., "truncated": true, "dropped_tokens": n}` in the ids
    file instead of the bare id, so the ids file still reads as one JSON value per row; a chunk of
    a source file has its fields there too (`{"id", "path", "start_line", ...}`).
    """

    def __init__(
        self, path: Path, dimensions: int, fields: RowFields | None = None, *, continuing: bool = False
    ) -> None:
        self.dimensions = dimensions
        self._fields = fields
        self.rows = 0
        self._ids = _PartialFile(ids_path(path), continuing=continuing)
        try:
            self._npy = _PartialFile(path, continuing=continuing)
        except BaseException:
            if continuing:  # the ids are the resume's to keep
                self._ids.keep()
            else:
                self._ids.discard()
            raise
        if not continuing:
            self._npy.file.write(npy_header(0, dimensions))

    def write(self, ids: Sequence[str | int], vectors: npt.NDArray[np.float32], dropped: Sequence[int]) -> None:
        self._npy.file.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        lines = (self._id_line(chunk_id, lost) for chunk_id, lost in zip(ids, dropped, strict=True))
        self._ids.file.write("".join(f"{line}\n" for line in lines).encode())
        self.rows += len(ids)

    def _id_line(self, chunk_id: str | int, lost: int) -> str:
        found = self._fields.pop(chunk_id, None) if self._fields else None
        if not found and not lost:
            return json.dumps(chunk_id)
        row: dict[str, object] = {"id": chunk_id, **(found or {})}
        if lost:
            row |= {"truncated": True, "dropped_tokens": lost}
        return json.dumps(row)

    def kept_rows(self, dimensions: int, head: int = 0) -> KeptRows:
        """The whole rows of the `.partial`s opened `continuing`: as many as have both an id and a vector."""
        return kept_npy(self._ids.file, self._npy.file, npy_header(0, dimensions), dimensions, head=head)

    def continue_from(self, kept: KeptRows) -> None:
        """Keep the first `kept` rows of both `.partial`s (none: `KeptRows()`) and write on after them."""
        header = npy_header(0, self.dimensions)
        self._ids.cut(kept.end)
        self._npy.cut(len(header) + 4 * self.dimensions * kept.count)
        self._npy.file.seek(0)
        self._npy.file.write(header)
        self._npy.file.seek(0, os.SEEK_END)
        self.rows = kept.count

    def commit(self) -> None:
        self._npy.file.seek(0)
        self._npy.file.write(npy_header(self.rows, self.dimensions))
        self._ids.commit()
        self._npy.commit()

    def discard(self) -> None:
        self._ids.discard()
        self._npy.discard()

    def keep_partial(self) -> None:
        self._ids.keep()
        self._npy.keep()


def ids_path(npy: Path) -> Path:
    return npy.with_name(f"{npy.stem}.ids.jsonl")


def npy_header(rows: int, dimensions: int) -> bytes:
    """numpy's own header for a float32 (rows, dimensions) array.

    numpy pads the header so the first axis can grow in place: its length does not depend on
    `rows`, so the real row count is written over the first one when the file is complete.
    """
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, dimensions)})
    return buffer.getvalue()
