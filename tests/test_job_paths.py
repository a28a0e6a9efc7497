"""Where jobs may read and write: each refusal, with its message, and the roots themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from providers import ConfigurationError, InputError
from providers.jobs.paths import AllowedRoots


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    (path / "src").mkdir(parents=True)
    (path / "src" / "a.py").write_text("a = 1")
    return path


@pytest.fixture
def roots(root: Path) -> AllowedRoots:
    return AllowedRoots((root.resolve(),))


def test_paths_under_the_root_are_resolved_relative_paths_from_the_first_root(roots: AllowedRoots, root: Path) -> None:
    assert roots.check_input("src/a.py") == root.resolve() / "src" / "a.py"
    assert roots.check_input(str(root / "src")) == root.resolve() / "src"
    assert roots.check_output("out.jsonl", [root / "src"]) == root.resolve() / "out.jsonl"


def test_a_path_outside_the_roots_is_refused_naming_the_variable(roots: AllowedRoots, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("no")
    with pytest.raises(InputError, match=r"outside the allowed directories .* set SIGNAL_HUB_JOB_ROOTS"):
        roots.check_input(str(tmp_path / "secret.txt"))
    with pytest.raises(InputError, match="outside the allowed directories"):
        roots.check_output(str(tmp_path / "out.jsonl"), [])


def test_dot_dot_is_refused_even_when_it_would_land_inside(roots: AllowedRoots) -> None:
    with pytest.raises(InputError, match=r"'\.\.' is not allowed"):
        roots.check_input("src/../src/a.py")
    with pytest.raises(InputError, match=r"'\.\.' is not allowed"):
        roots.check_output("../out.jsonl", [])


def test_a_symlink_leading_out_of_the_roots_is_refused(roots: AllowedRoots, root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "b.py").write_text("b = 2")
    (root / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "out.jsonl").symlink_to(tmp_path / "outside" / "stolen.jsonl")
    with pytest.raises(InputError, match="a symlink leading out of the allowed directories"):
        roots.check_input("link/b.py")
    with pytest.raises(InputError, match="a symlink leading out of the allowed directories"):
        roots.check_output("out.jsonl", [])
    # A file found while walking an input directory is checked the same way.
    (root / "src" / "escape.py").symlink_to(tmp_path / "outside" / "b.py")
    with pytest.raises(InputError, match="a symlink leading out"):
        roots.check_file(root / "src" / "escape.py")


def test_a_symlink_staying_inside_the_roots_is_allowed(roots: AllowedRoots, root: Path) -> None:
    (root / "alias.py").symlink_to(root / "src" / "a.py")
    assert roots.check_input("alias.py") == root.resolve() / "src" / "a.py"


def test_fifos_and_devices_are_refused(root: Path) -> None:
    os.mkfifo(root / "pipe")
    roots = AllowedRoots((root.resolve(), Path("/dev")))
    for path in ("pipe", "/dev/null"):
        with pytest.raises(InputError, match="not a regular file or directory"):
            roots.check_input(path)
    os.mkfifo(root / "out.jsonl")
    with pytest.raises(InputError, match="exists and is not a regular file"):
        roots.check_output("out.jsonl", [])


def test_an_output_over_its_input_and_missing_things_are_refused(roots: AllowedRoots, root: Path) -> None:
    source = roots.check_input("src/a.py")
    with pytest.raises(InputError, match="is also the input"):
        roots.check_output("src/a.py", [source])
    with pytest.raises(InputError, match=r"the directory .* does not exist"):
        roots.check_output("nowhere/out.jsonl", [source])
    with pytest.raises(InputError, match="cannot read it"):
        roots.check_input("missing.jsonl")
    with pytest.raises(InputError, match="non-empty string"):
        roots.check_input("")


def test_roots_come_from_the_variable_split_by_pathsep_else_the_working_directory(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    from_env = AllowedRoots.from_env({"SIGNAL_HUB_JOB_ROOTS": f"{root}{os.pathsep}{other}"}, cwd=tmp_path)
    assert from_env.roots == (root.resolve(), other.resolve())
    assert AllowedRoots.from_env({}, cwd=root).roots == (root.resolve(),)
    with pytest.raises(ConfigurationError, match="not an absolute path to a directory"):
        AllowedRoots.from_env({"SIGNAL_HUB_JOB_ROOTS": "relative/dir"}, cwd=tmp_path)


def test_client_roots_only_narrow_the_servers(roots: AllowedRoots, root: Path, tmp_path: Path) -> None:
    narrowed = roots.narrowed([root / "src", tmp_path / "elsewhere"])
    assert narrowed.roots == (root.resolve() / "src",)
    assert narrowed.check_input("a.py") == root.resolve() / "src" / "a.py"  # relative to the first root
    with pytest.raises(InputError, match="outside the allowed directories"):
        narrowed.check_output(str(root / "out.jsonl"), [])
    assert roots.narrowed([tmp_path]).roots == roots.roots  # a wider client root does not widen
    with pytest.raises(InputError, match="do not overlap"):
        roots.narrowed([tmp_path / "elsewhere"]).check_input("src/a.py")
