"""Reading a job's chunks (the `embed` command and the MCP job tools).

Sources are JSONL (`{"id", "text"}` per line), whole text files or one chunk per line, read lazily
and checked against the input limits record by record; source files and directories are chunked
by syntax (`chunks`, see `providers/chunking` and `jobs/repository.py`). Directories give the
files `chunking.selection` picks: what git would track, less binary, minified, huge and build files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from providers.chunking.selection import FileFilter, select_files
from providers.errors import InputError
from providers.settings import InputLimits

__all__ = [
    "FORMATS",
    "Chunk",
    "DuplicateIds",
    "Invalid",
    "Skipped",
    "Source",
    "checked",
    "find_sources",
    "read_chunks",
    "windows",
]

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
FORMATS = ("auto", "jsonl", "chunks", "text", "lines")


@dataclass(frozen=True)
class Chunk:
    id: str | int
    text: str


@dataclass(frozen=True)
class Skipped:
    """A file found in a directory that gives nothing to embed (e.g. not UTF-8): counted, not an error."""

    where: str
    reason: str


@dataclass(frozen=True)
class Invalid:
    """A record that cannot be embedded, and where it is."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class Source:
    path: Path | None
    """None: standard input."""
    format: str
    """"jsonl" ({"id", "text"} per line), "chunks" (by syntax, or windows), "text" (all of it is one
    chunk) or "lines" (a chunk per line)."""
    relative: str | None = None
    """The path chunk ids start with: relative to the directory it was found in (a file named alone: its name)."""
    in_directory: bool = False
    """Found in a directory (so a file with nothing to embed is skipped, not refused)."""
    real: Path | None = None
    """Set: the file to read, resolved and checked just before, opened without following a symlink."""

    @property
    def name(self) -> str:
        return "stdin" if self.path is None else str(self.path)


# --- reading ---------------------------------------------------------------------------------------


def find_sources(
    inputs: Sequence[str],
    fmt: str,
    glob: str | FileFilter,
    exclude: frozenset[Path],
    check: Callable[[Path], None] | None = None,
    skipped: Counter[str] | None = None,
) -> Iterator[Source]:
    """Each input as a source; directories give the files `select_files` picks, in path order.

    `glob` is a `FileFilter` (or one name pattern). `check(path)` may refuse a file found in a
    directory (by raising), e.g. one outside the allowed roots. What a directory leaves out is
    counted in `skipped` by reason.
    """
    wanted = glob if isinstance(glob, FileFilter) else FileFilter(globs=() if glob == "*" else (glob,))
    for raw in inputs:
        if raw == "-":
            yield Source(None, "jsonl" if fmt in ("auto", "chunks") else fmt)
        elif not (path := Path(raw)).is_dir():
            yield Source(path, _format_of(path, fmt), path.name)
        else:
            found = select_files(path, wanted)
            if skipped is not None:
                skipped.update(found.skipped)
            for file, relative in found.files:
                if file.resolve() in exclude:
                    continue
                if check is not None:
                    check(file)
                yield Source(file, "chunks" if fmt == "auto" else fmt, relative, in_directory=True)


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "chunks"


def read_chunks(source: Source, limits: InputLimits) -> Iterator[Chunk | Invalid]:
    """The chunks of one source, lazily; records that cannot be embedded come as `Invalid`.

    A "chunks" source is read by `jobs/repository.py`, which knows the model's token budget.
    """
    if source.format == "chunks":
        raise ValueError("chunks sources are read by providers.jobs.repository")
    if source.format == "text":
        yield _whole(source, limits)
        return
    # Room for a text at its limit with every character escaped (\uXXXX), and the id.
    max_line_bytes = 6 * limits.max_text_chars + 65_536
    with _open_binary(source) as stream:
        for number, raw in _numbered_lines(stream, max_line_bytes):
            where = f"{source.name} line {number}"
            if raw is None:
                yield Invalid(where, f"the line is longer than {max_line_bytes:,} bytes")
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield Invalid(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue  # blank lines carry nothing in JSONL: allow them
            if source.format == "jsonl":
                yield _jsonl_chunk(line, where, limits)
            else:
                yield checked(f"{source.name}:{number}", line.rstrip("\r\n"), where, limits)


def _numbered_lines(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(number, bytes) of each line; None for a line over `max_bytes`, which is never held whole."""
    number = 0
    while line := stream.readline(max_bytes + 1):
        number += 1
        if len(line) <= max_bytes:
            yield number, line
            continue
        while line and not line.endswith(b"\n"):
            line = stream.readline(1 << 20)
        yield number, None


@contextlib.contextmanager
def _open_binary(source: Source) -> Iterator[IO[bytes]]:
    if source.path is None:
        yield sys.stdin.buffer
        return
    try:
        if source.real is None:
            stream = source.path.open("rb")
        else:  # a symlink swapped in since the check is not followed
            stream = os.fdopen(os.open(source.real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
    except OSError as exc:
        raise InputError(f"{source.name}: cannot read it ({exc.strerror or exc}).") from exc
    with stream:
        yield stream


def _whole(source: Source, limits: InputLimits) -> Chunk | Invalid:
    with _open_binary(source) as stream:
        data = stream.read(4 * limits.max_text_chars + 1)
    if len(data) > 4 * limits.max_text_chars:  # a character is at most 4 bytes of UTF-8
        return Invalid(source.name, f"over {limits.max_text_chars:,} characters: split it into chunks")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Invalid(source.name, f"not UTF-8 text ({exc.reason} at byte {exc.start}); leave it out with --glob")
    return checked(source.name, text, source.name, limits)


def _jsonl_chunk(line: str, where: str, limits: InputLimits) -> Chunk | Invalid:
    try:
        record = json.loads(line)
    except ValueError as exc:
        return Invalid(where, f"not valid JSON ({exc})")
    if not isinstance(record, dict):
        return Invalid(where, f'expected a JSON object with "id" and "text", got {type(record).__name__}')
    if "id" not in record:
        return Invalid(where, 'no "id" field')
    chunk_id = record["id"]
    if isinstance(chunk_id, bool) or not isinstance(chunk_id, str | int):
        return Invalid(where, f'"id" must be a string or an integer, not {json.dumps(chunk_id)}')
    if "text" not in record:
        return Invalid(where, f'no "text" field (id {json.dumps(chunk_id)})')
    return checked(chunk_id, record["text"], where, limits)


def checked(chunk_id: str | int, text: object, where: str, limits: InputLimits) -> Chunk | Invalid:
    label = f"(id {json.dumps(chunk_id)})"
    if not isinstance(text, str):
        return Invalid(where, f'"text" must be a string, not {type(text).__name__} {label}')
    if not text.strip():
        return Invalid(where, f"the text is empty or whitespace only {label}")
    if len(text) > limits.max_text_chars:
        return Invalid(where, f"the text is over {limits.max_text_chars:,} characters: split it {label}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return Invalid(where, f"the text holds an unpaired surrogate, which is not valid Unicode {label}")
    return Chunk(chunk_id, text)


def windows(chunks: Iterable[Chunk], size: int, max_chars: int) -> Generator[list[Chunk], None, None]:
    """Consecutive groups of at most `size` chunks and `max_chars` characters: one service call each.

    A window is handed on as soon as it is full; when reading fails, the chunks read before it are.
    """
    window: list[Chunk] = []
    chars = 0
    try:
        for chunk in chunks:
            if window and chars + len(chunk.text) > max_chars:
                yield window
                window, chars = [], 0
            window.append(chunk)
            chars += len(chunk.text)
            if len(window) == size:
                yield window
                window, chars = [], 0
    except InputError:
        if window:
            yield window
        raise
    if window:
        yield window


class DuplicateIds:
    """Ids seen so far, kept on disk (a temporary SQLite file) so memory stays flat however long the input."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)  # "": a private temporary file
        self._db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID")
        self.count = 0
        self.examples: list[str | int] = []

    def add(self, chunk_id: str | int) -> bool:
        """Note `chunk_id`; True when it was seen before."""
        digest = hashlib.blake2b(json.dumps(chunk_id).encode(), digest_size=16).digest()
        if self._db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (digest,)).rowcount:
            return False
        self.count += 1
        if len(self.examples) < 3:
            self.examples.append(chunk_id)
        return True

    def describe(self) -> str:
        shown = ", ".join(json.dumps(example) for example in self.examples)
        return f"{self.count:,} repeated id{'' if self.count == 1 else 's'} (e.g. {shown}): rows with one id disagree"

    def close(self) -> None:
        self._db.close()
