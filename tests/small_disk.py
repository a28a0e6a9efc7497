"""A real small disk for tests of a full disk: a tmpfs mounted under the test's directory (root only)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    """`path` as a tmpfs of `size_kb` KiB for the duration; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path: Path, leave_bytes: int) -> None:
    """Fill the disk holding `path` until about `leave_bytes` are free."""
    import shutil

    free = shutil.disk_usage(path).free
    (path / "filler").write_bytes(b"\0" * max(free - leave_bytes, 0))
