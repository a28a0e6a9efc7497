"""Where jobs may read and write: only under allowed roots, never through tricks.

```python
roots = AllowedRoots.from_env(os.environ, cwd=Path.cwd())   # SIGNAL_HUB_JOB_ROOTS, else the cwd
source = roots.check_input("src/")                          # a real path under a root, or InputError
target = roots.check_output("out/vectors.npy", inputs=[source])
```

Refused: paths outside the roots, any `..` component, symlinks that lead out of the roots
(every path is resolved before it is compared), devices, FIFOs and sockets, and an output that
would overwrite an input.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from providers.errors import ConfigurationError, InputError

__all__ = ["JOB_ROOTS_VARIABLE", "AllowedRoots"]

JOB_ROOTS_VARIABLE = "SIGNAL_HUB_JOB_ROOTS"


@dataclass(frozen=True)
class AllowedRoots:
    """Directories (resolved) under which jobs read and write."""

    roots: tuple[Path, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str], cwd: Path) -> AllowedRoots:
        raw = env.get(JOB_ROOTS_VARIABLE, "").strip()
        if not raw:
            return cls((cwd.resolve(),))
        roots = []
        for part in filter(None, (p.strip() for p in raw.split(os.pathsep))):
            path = Path(part).expanduser()
            if not path.is_absolute() or not path.is_dir():
                raise ConfigurationError(f"{JOB_ROOTS_VARIABLE}: {part!r} is not an absolute path to a directory.")
            roots.append(path.resolve())
        return cls(tuple(roots))

    def narrowed(self, client_roots: Iterable[Path]) -> AllowedRoots:
        """The part of these roots that the client's MCP roots also allow (client roots can only narrow)."""
        kept: list[Path] = []
        for client in (Path(os.path.realpath(p)) for p in client_roots):
            for root in self.roots:
                if client.is_relative_to(root):
                    kept.append(client)
                elif root.is_relative_to(client):
                    kept.append(root)
        return AllowedRoots(tuple(dict.fromkeys(kept)))

    def resolve(self, raw: str) -> Path:
        """`raw` (relative paths are taken from the first root) resolved, if it is under a root."""
        if not raw or "\x00" in raw:
            raise InputError("a path must be a non-empty string without NUL characters.")
        path = Path(raw).expanduser()
        if ".." in path.parts:
            raise InputError(f"{raw}: '..' is not allowed in job paths; give the path without it.")
        if not self.roots:
            raise InputError("no directory is allowed for jobs: the client's roots and the server's do not overlap.")
        if not path.is_absolute():
            path = self.roots[0] / path
        real = Path(os.path.realpath(path))  # symlinks followed: a link may not lead out of the roots
        if not any(real.is_relative_to(root) for root in self.roots):
            where = " or ".join(str(root) for root in self.roots)
            how = "a symlink leading out of " if real != path else "outside "
            raise InputError(f"{raw}: {how}the allowed directories ({where}); set {JOB_ROOTS_VARIABLE} to allow more.")
        return real

    def check_input(self, raw: str) -> Path:
        path = self.resolve(raw)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise InputError(f"{raw}: cannot read it ({exc.strerror or exc}).") from exc
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"{raw}: not a regular file or directory (devices, FIFOs and sockets are refused).")
        return path

    def check_file(self, path: Path) -> None:
        """Refuse a file found while walking an input directory, the same way as a named input."""
        self.check_input(str(path))

    def check_output(self, raw: str, inputs: Sequence[Path]) -> Path:
        path = self.resolve(raw)
        if not path.parent.is_dir():
            raise InputError(f"{raw}: the directory {path.parent} does not exist.")
        for existing in (path, path.with_name(path.name + ".partial")):
            if existing.exists() or existing.is_symlink():
                mode = existing.lstat().st_mode
                if not stat.S_ISREG(mode):
                    raise InputError(f"{raw}: {existing.name} exists and is not a regular file; choose another output.")
        for source in inputs:
            if path == source:
                raise InputError(f"{raw} is also the input; write the vectors elsewhere.")
        return path
