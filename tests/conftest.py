"""Shared fixtures: the anyio backend and settings in a temporary data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")
