"""Shared fixtures: the anyio backend and settings in a temporary data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export of the packaged model for the whole session (it takes ~10 s to make)."""
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory, onnx_exports: Path) -> Path:
    """One data directory for the whole session, for tests that only need the local model."""
    path = tmp_path_factory.mktemp("local-models")
    (path / "onnx").symlink_to(onnx_exports, target_is_directory=True)
    return path


@pytest.fixture
def data_dir(tmp_path: Path, onnx_exports: Path) -> Path:
    """A fresh data directory (ledger, cache) that shares the session's ONNX exports."""
    path = tmp_path / "data"
    path.mkdir()
    (path / "onnx").symlink_to(onnx_exports, target_is_directory=True)
    return path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory that jobs may read and write (SIGNAL_HUB_JOB_ROOTS)."""
    path = tmp_path / "project"
    path.mkdir()
    monkeypatch.setenv("SIGNAL_HUB_JOB_ROOTS", str(path))
    return path
