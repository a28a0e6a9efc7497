"""Which files of a directory to embed: what git would track, less what is never worth embedding.

```python
found = select_files(Path("repo"), FileFilter(globs=("*.py",), excludes=("tests/",)))
found.files      # [(Path("/abs/repo/pkg/a.py"), "pkg/a.py"), ...] in path order
found.skipped    # Counter({"binary": 3, "build or vendored directory": 2, ...})
```

In a git work tree the files are `git ls-files --cached --others --exclude-standard` (so
`.gitignore`, `.git/info/exclude` and the global excludes count); elsewhere the `.gitignore`
files of the tree are read with `pathspec`. Always left out: hidden files, symlinks, binary
files, files over the size limit, minified files, and build or vendored directories.
`globs` keep only matching files and `excludes` drop matching ones (gitignore patterns).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pathspec

__all__ = ["DEFAULT_MAX_FILE_BYTES", "SKIPPED_DIRECTORIES", "FileFilter", "Selected", "select_files", "skip_reason"]

DEFAULT_MAX_FILE_BYTES = 1_000_000
SKIPPED_DIRECTORIES = frozenset({"node_modules", ".venv", "venv", "dist", "build", "__pycache__", ".git"})
_BINARY_SUFFIXES = frozenset(
    [
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".bmp",
        ".ico",
        ".webp",
        ".pdf",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".7z",
        ".tar",
        ".jar",
        ".war",
        ".class",
        ".pyc",
        ".pyo",
        ".so",
        ".dylib",
        ".dll",
        ".exe",
        ".o",
        ".a",
        ".lib",
        ".bin",
        ".dat",
        ".db",
        ".sqlite",
        ".sqlite3",
        ".npy",
        ".npz",
        ".pkl",
        ".parquet",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".mp3",
        ".mp4",
        ".wav",
        ".ogg",
        ".mov",
        ".avi",
        ".webm",
        ".onnx",
        ".safetensors",
        ".pt",
        ".whl",
    ]
)
_SNIFF_BYTES = 8192
_MINIFIED_LINE_BYTES = 1000
"""A file whose lines average more than this is minified (or generated data): no lines to chunk by."""
_GIT_TIMEOUT_S = 60


@dataclass(frozen=True)
class FileFilter:
    """What to take from a directory beyond the ignore rules."""

    globs: tuple[str, ...] = ()
    """Keep only files matching one of these (gitignore patterns, e.g. `*.py`, `src/**`); none: all."""
    excludes: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_FILE_BYTES

    def to_json(self) -> dict[str, object]:
        return {"glob": list(self.globs), "exclude": list(self.excludes), "max_bytes": self.max_bytes}


@dataclass
class Selected:
    files: list[tuple[Path, str]] = field(default_factory=list)
    """Each file to embed: its path, and its path relative to the root (with `/`)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Files (and pruned directories) left out, by reason."""
    git: bool = False


def select_files(root: Path, wanted: FileFilter | None = None) -> Selected:
    """The files under `root` to embed, sorted by relative path, and what was left out and why."""
    wanted = wanted or FileFilter()
    found = Selected()
    listed = _git_files(root)
    found.git = listed is not None
    candidates = listed if listed is not None else _walk(root, found.skipped)
    keep = pathspec.GitIgnoreSpec.from_lines(wanted.globs) if wanted.globs and wanted.globs != ("*",) else None
    drop = pathspec.GitIgnoreSpec.from_lines(wanted.excludes) if wanted.excludes else None
    for relative in sorted(candidates):
        parts = PurePosixPath(relative).parts
        if any(part in SKIPPED_DIRECTORIES for part in parts[:-1]):
            found.skipped["build or vendored directory"] += 1
        elif any(part.startswith(".") for part in parts):
            found.skipped["hidden"] += 1
        elif keep is not None and not keep.match_file(relative):
            found.skipped["not matching glob"] += 1
        elif drop is not None and drop.match_file(relative):
            found.skipped["excluded"] += 1
        else:
            path = root / relative
            reason = skip_reason(path, wanted.max_bytes)
            if reason is None:
                found.files.append((path, relative))
            else:
                found.skipped[reason] += 1
    return found


def skip_reason(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str | None:
    """Why a file is not worth embedding (binary, too big, minified...), or None to embed it."""
    if path.is_symlink():
        return "symlink"
    try:
        info = path.stat()
    except OSError:
        return "unreadable"
    if not path.is_file():
        return "not a regular file"
    if info.st_size == 0:
        return "empty"
    if path.suffix.lower() in _BINARY_SUFFIXES:
        return "binary"
    if info.st_size > max_bytes:
        return f"over {max_bytes:,} bytes"
    if ".min." in path.name:
        return "minified"
    try:
        with path.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES * 8)
    except OSError:
        return "unreadable"
    if b"\x00" in head[:_SNIFF_BYTES]:
        return "binary"
    if len(head) > _SNIFF_BYTES and len(head) / (head.count(b"\n") + 1) > _MINIFIED_LINE_BYTES:
        return "minified"
    return None


def _git_files(root: Path) -> list[str] | None:
    """What git would track under `root` (relative paths), or None outside a work tree or without git."""
    git = shutil.which("git")
    if git is None:
        return None
    command = [git, "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"]
    try:
        probe = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
        if probe.returncode != 0 or probe.stdout.strip() != b"true":
            return None
        listed = subprocess.run(command, capture_output=True, timeout=_GIT_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [os.fsdecode(name) for name in listed.stdout.split(b"\x00") if name]
    return list(dict.fromkeys(names))  # an unmerged file is listed once per stage


def _walk(root: Path, skipped: Counter[str]) -> Iterator[str]:
    """Files under `root` outside a git work tree, with every `.gitignore` on the way applied."""
    rules: list[tuple[str, pathspec.GitIgnoreSpec]] = []  # (directory relative to root, its rules)
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root).as_posix()
        here = "" if here == "." else here
        rules = [(base, spec) for base, spec in rules if here == base or here.startswith(base + "/") or not base]
        ignore = Path(folder) / ".gitignore"
        if ignore.is_file():
            with contextlib.suppress(OSError, ValueError):
                rules.append((here, pathspec.GitIgnoreSpec.from_lines(ignore.read_text(errors="replace").splitlines())))
        kept = []
        for name in sorted(dirs):
            relative = f"{here}/{name}" if here else name
            if name in SKIPPED_DIRECTORIES or name.startswith("."):
                skipped["build or vendored directory" if name in SKIPPED_DIRECTORIES else "hidden"] += 1
            elif _ignored(rules, relative + "/"):
                skipped["ignored (.gitignore)"] += 1
            else:
                kept.append(name)
        dirs[:] = kept
        for name in files:
            relative = f"{here}/{name}" if here else name
            if _ignored(rules, relative):
                skipped["ignored (.gitignore)"] += 1
            else:
                yield relative


def _ignored(rules: list[tuple[str, pathspec.GitIgnoreSpec]], relative: str) -> bool:
    """Git's rule: the deepest `.gitignore` with a matching pattern decides (a `!` pattern re-includes)."""
    verdict = False
    for base, spec in rules:
        below = relative[len(base) + 1 :] if base else relative
        result = spec.check_file(below).include
        if result is not None:
            verdict = result
    return verdict
