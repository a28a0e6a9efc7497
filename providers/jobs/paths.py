"""Where jobs may read and write: only under allowed roots, never through tricks.

```python
roots = AllowedRoots.from_env(os.environ, cwd=Path.cwd())   # SIGNAL_HUB_JOB_ROOTS, else the cwd
source = roots.check_input("src/")                          # a real path under a root, or InputError
target = roots.check_output("out/vectors.npy", inputs=[source])
```

Refused: paths outside the roots, any `..` component, symlinks that lead out of the roots
(every path is resolved before it is compared), devices, FIFOs and sockets, and outputs that
`outputs.check_output_target` refuses (into an input or the data directory, over a file). A job
checks its paths again when it runs (`check_unmoved`), and reads and writes without following a
symlink put in their place since.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from providers.errors import ConfigurationError, InputError
from providers.jobs.outputs import check_output_target, job_files

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

    def check_output(
        self,
        raw: str,
        inputs: Sequence[Path],
        *,
        out_format: str = "jsonl",
        data_dir: Path | None = None,
        overwrite: bool = False,
    ) -> Path:
        """`raw` resolved, if a job reading `inputs` may write there (see `outputs.check_output_target`)."""
        path = self.resolve(raw)
        if not path.parent.is_dir():
            raise InputError(f"{raw}: the directory {path.parent} does not exist.")
        for written in job_files(path, out_format):
            partial = written.with_name(written.name + ".partial")
            if (partial.exists() or partial.is_symlink()) and not stat.S_ISREG(partial.lstat().st_mode):
                raise InputError(f"{raw}: {partial.name} exists and is not a regular file; choose another output.")
        check_output_target(path, out_format, inputs=inputs, data_dir=data_dir, overwrite=overwrite, shown=raw)
        return path

    def check_unmoved(self, checked: Path) -> Path:
        """`checked` (resolved when the job started) if it still resolves to itself under the roots.

        A queued job may wait long: a directory on its path swapped for a symlink since is refused.
        """
        now = self.resolve(str(checked))
        if now != checked:
            raise InputError(f"{checked}: now leads to {now} (a symlink was put in its way); the job stops here.")
        return now
