"""One frozen settings object, read from the environment only at the program's edge."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["InputLimits", "Settings"]

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    """What one call may ask for. Larger jobs are split by the caller (or use the CLI)."""

    max_texts: int = 2048
    max_text_chars: int = 100_000
    max_total_chars: int = 4_000_000


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable. Build it with `Settings.from_env()` at an entry point, or by hand."""

    provider: str = "local"
    data_dir: Path | None = None
    local_model: str = DEFAULT_LOCAL_MODEL
    local_models: Mapping[str, Path] = field(default_factory=dict)
    """Extra sentence-transformers models by name → directory, beside the packaged default."""
    local_batch_size: int = 8
    device: str | None = None
    """None picks CUDA when available, else the CPU."""
    openai_model: str = DEFAULT_OPENAI_MODEL
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    limits: InputLimits = field(default_factory=InputLimits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `SIGNAL_HUB_*` settings and the OpenAI SDK's own `OPENAI_API_KEY` / `OPENAI_BASE_URL`."""
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if not _unexpanded(v)}
        data_dir = env.get("SIGNAL_HUB_DATA_DIR")
        return cls(
            provider=env.get("SIGNAL_HUB_PROVIDER", "local").strip().lower() or "local",
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            local_model=env.get("SIGNAL_HUB_LOCAL_MODEL", DEFAULT_LOCAL_MODEL),
            local_models=_parse_model_paths(env.get("SIGNAL_HUB_LOCAL_MODELS", "")),
            local_batch_size=_positive_int(env, "SIGNAL_HUB_LOCAL_BATCH_SIZE", 8),
            device=env.get("SIGNAL_HUB_DEVICE") or None,
            openai_model=env.get("SIGNAL_HUB_OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
        )


def _unexpanded(value: str) -> bool:
    """A host that does not expand `${VAR}` in its config passes it literally: treat it as unset."""
    return value.startswith("${") and value.endswith("}")


def _parse_model_paths(spec: str) -> dict[str, Path]:
    """Parse `name=/path/to/model,other=/path` into a mapping."""
    models: dict[str, Path] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigurationError(
                f"SIGNAL_HUB_LOCAL_MODELS entry {entry!r} is not name=/path/to/model; "
                "separate several entries with commas."
            )
        models[name.strip()] = Path(path.strip()).expanduser()
    return models


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {raw!r}.")
    return value
