"""Which files of a tree are embedded: git's view inside a work tree, .gitignore files outside, and the skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from providers.chunking.selection import FileFilter, select_files

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def make_tree(root: Path) -> None:
    files = {
        "src/app.py": "print('app')\n",
        "src/util.py": "def util():\n    return 1\n",
        "src/generated/out.py": "x = 1\n",
        "src/keep.log": "kept by a negation\n",
        "src/debug.log": "ignored\n",
        "docs/guide.md": "# Guide\n",
        "node_modules/lib/index.js": "module.exports = 1\n",
        "build/lib/app.py": "print('copy')\n",
        "pkg/__pycache__/app.cpython-311.pyc": "\x00\x01",
        "assets/app.min.js": "var a=1;" * 2000,
        ".env": "SECRET=1\n",
        "empty.txt": "",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "data.bin").write_bytes(b"abc\x00def")
    (root / "big.txt").write_text("line\n" * 300_000)  # 1.5 MB
    (root / ".gitignore").write_text("*.log\n!keep.log\n")
    (root / "src" / ".gitignore").write_text("generated/\n")


def run_git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, timeout=60)


def test_outside_git_the_gitignore_files_and_the_skip_rules_decide(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = select_files(tmp_path)
    assert not found.git
    assert [relative for _, relative in found.files] == ["docs/guide.md", "src/app.py", "src/keep.log", "src/util.py"]
    assert found.skipped["binary"] == 2  # logo.png by its name, data.bin by a NUL byte
    assert found.skipped["minified"] == 1
    assert found.skipped["over 1,000,000 bytes"] == 1
    assert found.skipped["empty"] == 1
    assert found.skipped["ignored (.gitignore)"] == 2  # debug.log, src/generated/
    assert found.skipped["build or vendored directory"] == 3  # node_modules, build, __pycache__


@needs_git
def test_in_a_git_work_tree_the_files_are_what_git_would_track(tmp_path: Path) -> None:
    make_tree(tmp_path)
    run_git(tmp_path, "init", "-q")
    (tmp_path / ".git" / "info" / "exclude").write_text("docs/\n")
    run_git(tmp_path, "add", "src/app.py")  # tracked; the others untracked but not ignored
    found = select_files(tmp_path)
    assert found.git
    assert [relative for _, relative in found.files] == ["src/app.py", "src/keep.log", "src/util.py"]
    assert found.skipped["hidden"] == 3  # .env, .gitignore and src/.gitignore
    assert found.skipped["build or vendored directory"] == 3


@needs_git
def test_a_subdirectory_of_a_work_tree_lists_only_its_own_files(tmp_path: Path) -> None:
    make_tree(tmp_path)
    run_git(tmp_path, "init", "-q")
    found = select_files(tmp_path / "src")
    assert [relative for _, relative in found.files] == ["app.py", "keep.log", "util.py"]


def test_glob_and_exclude_narrow_with_gitignore_patterns(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = select_files(tmp_path, FileFilter(globs=("*.py", "*.md"), excludes=("src/util.py",)))
    assert [relative for _, relative in found.files] == ["docs/guide.md", "src/app.py"]
    assert found.skipped["excluded"] == 1
    assert found.skipped["not matching glob"] >= 1


def test_a_smaller_size_limit_leaves_out_more(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = select_files(tmp_path, FileFilter(max_bytes=10))
    assert [relative for _, relative in found.files] == ["docs/guide.md"]
