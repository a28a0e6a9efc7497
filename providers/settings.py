"""One frozen settings object, read from the environment only at the program's edge."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from providers.env import (
    NON_NEGATIVE_INT,
    NON_NEGATIVE_USD,
    POSITIVE_INT,
    choice,
    number,
    optional,
    parse_pairs,
    parsed,
    positive,
    read_api_key,
    unexpanded,
)
from providers.errors import ConfigurationError
from providers.fallback import FallbackPolicy

# Light modules only (numpy at most): settings are read before any backend or SDK is chosen.
from providers.local_model.encoders import LOCAL_BACKENDS, LocalBackend
from providers.local_model.lanes import BATCH_PRIORITIES, BatchPriority
from providers.local_model.long_texts import LONG_TEXT_POLICIES, LongTextPolicy

__all__ = ["Budget", "InputLimits", "Settings"]

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"

VectorsMode = Literal["inline", "on_request"]
VECTORS_MODES: tuple[VectorsMode, ...] = get_args(VectorsMode)


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    """What one call may ask for. Larger jobs are split by the caller (or use the CLI)."""

    max_texts: int = 2048
    max_text_chars: int = 100_000
    max_total_chars: int = 4_000_000


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Spending limits in USD over a period: "session", "day", "month" (UTC) or "all"."""

    soft_usd: float | None = None
    hard_usd: float | None = None
    hard_usd_per_client: float | None = None
    """The hard limit each client of an HTTP server has on its own, inside `hard_usd`."""
    period: str = "month"

    def __post_init__(self) -> None:
        if self.period not in {"session", "day", "month", "all"}:
            raise ConfigurationError(f"budget period {self.period!r} is not one of: session, day, month, all.")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable. Build it with `Settings.from_env()` at an entry point, or by hand."""

    provider: str = "local"
    data_dir: Path | None = None
    local_model: str = DEFAULT_LOCAL_MODEL
    local_models: Mapping[str, Path] = field(default_factory=dict)
    """Extra sentence-transformers models by name → directory, beside the packaged default."""
    local_batch_size: int | None = None
    """Windows per model call; None: the backend's measured best (`local.DEFAULT_BATCH_SIZES`)."""
    local_backend: LocalBackend = "auto"
    """"auto": torch on a GPU, int8 ONNX Runtime on the CPU."""
    local_long_texts: LongTextPolicy = "truncate"
    """A text over the model's window: "truncate" it, or "split" it into windows and average them."""
    local_split_overlap: int = 64
    """Tokens neighbouring windows share when texts are split."""
    local_threads: int | None = None
    """CPU threads for the local model; None: every core this process may use."""
    local_batch_priority: BatchPriority = "idle"
    """"idle": batches' model work at the OS's idle priority, one-text calls at normal (`local_model/lanes.py`)."""
    device: str | None = None
    """None picks CUDA when available, else the CPU."""
    openai_model: str = DEFAULT_OPENAI_MODEL
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    limits: InputLimits = field(default_factory=InputLimits)
    prices: Mapping[str, float] = field(default_factory=dict)
    """USD per 1M tokens by model, over the built-in price table."""
    budget: Budget = field(default_factory=Budget)
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)
    cache: bool = True
    """Keep vectors in a persistent cache under the data directory, keyed by vector space and text."""
    shared_pacing: bool = True
    """Pace remote requests together with every process sharing the data directory, endpoint and key."""
    vectors: VectorsMode = "inline"
    """Whether embed tools answer with vectors ("inline") or only when a call asks ("on_request")."""
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    """Options objects of registered providers that read their own `SIGNAL_HUB_<NAME>_*` variables,
    by provider name (only those with a variable set)."""
    ledger_session: str | None = None
    """The cost ledger's session every ledger opened with these settings records in (a server's
    calls, jobs and batches are one session); None: each ledger starts a session of its own."""

    @property
    def resolved_data_dir(self) -> Path:
        """Where the ledger and caches live: `data_dir`, else the user's data directory."""
        if self.data_dir is not None:
            return self.data_dir
        import platformdirs

        return Path(platformdirs.user_data_dir("signal-hub-embeddings", appauthor=False))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `SIGNAL_HUB_*` settings and the OpenAI SDK's own `OPENAI_API_KEY` / `OPENAI_BASE_URL`."""
        from providers.registry import (  # the registry finds provider modules by name
            check_provider_names,
            provider_specs,
        )

        env = {k: v for k, v in (os.environ if environ is None else environ).items() if not unexpanded(v)}
        data_dir = env.get("SIGNAL_HUB_DATA_DIR")
        chain = tuple(
            p.strip().lower()
            for p in env.get("SIGNAL_HUB_FALLBACK_CHAIN", ",".join(FallbackPolicy().chain)).split(",")
            if p.strip()
        )
        check_provider_names(chain, "SIGNAL_HUB_FALLBACK_CHAIN")
        provider_options = {
            spec.name: spec.read_options(env)
            for spec in provider_specs()
            if spec.read_options is not None and any(k.startswith(f"SIGNAL_HUB_{spec.name.upper()}_") for k in env)
        }
        return cls(
            provider=env.get("SIGNAL_HUB_PROVIDER", "local").strip().lower() or "local",
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            local_model=env.get("SIGNAL_HUB_LOCAL_MODEL", DEFAULT_LOCAL_MODEL),
            local_models={
                name: Path(path).expanduser()
                for name, path in parse_pairs(env, "SIGNAL_HUB_LOCAL_MODELS", "name=/path/to/model").items()
            },
            local_batch_size=optional(env, "SIGNAL_HUB_LOCAL_BATCH_SIZE", int, POSITIVE_INT),
            local_backend=choice(env, "SIGNAL_HUB_LOCAL_BACKEND", LOCAL_BACKENDS, "auto"),
            local_long_texts=choice(env, "SIGNAL_HUB_LOCAL_LONG_TEXTS", LONG_TEXT_POLICIES, "truncate"),
            local_split_overlap=number(env, "SIGNAL_HUB_LOCAL_SPLIT_OVERLAP", int, NON_NEGATIVE_INT, 64),
            local_threads=optional(env, "SIGNAL_HUB_LOCAL_THREADS", int, POSITIVE_INT),
            local_batch_priority=choice(env, "SIGNAL_HUB_LOCAL_BATCH_PRIORITY", BATCH_PRIORITIES, "idle"),
            device=env.get("SIGNAL_HUB_DEVICE") or None,
            openai_model=env.get("SIGNAL_HUB_OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            openai_api_key=read_api_key(env, "OPENAI_API_KEY"),
            prices=_prices(env),
            fallback=FallbackPolicy(
                mode=env.get("SIGNAL_HUB_FALLBACK", "on_outage").strip().lower(),
                chain=chain,
                failure_threshold=number(env, "SIGNAL_HUB_CIRCUIT_FAILURES", int, POSITIVE_INT, 3),
                cooldown_s=number(env, "SIGNAL_HUB_CIRCUIT_COOLDOWN_S", float, positive("seconds"), 60.0),
            ),
            cache=env.get("SIGNAL_HUB_CACHE", "on").strip().lower() not in {"off", "0", "false", "no"},
            shared_pacing=env.get("SIGNAL_HUB_SHARED_PACING", "on").strip().lower() not in {"off", "0", "false", "no"},
            vectors=choice(env, "SIGNAL_HUB_VECTORS", VECTORS_MODES, "inline"),
            budget=Budget(
                soft_usd=optional(env, "SIGNAL_HUB_BUDGET_SOFT_USD", float, NON_NEGATIVE_USD),
                hard_usd=optional(env, "SIGNAL_HUB_BUDGET_HARD_USD", float, NON_NEGATIVE_USD),
                hard_usd_per_client=optional(env, "SIGNAL_HUB_BUDGET_HARD_USD_PER_CLIENT", float, NON_NEGATIVE_USD),
                period=env.get("SIGNAL_HUB_BUDGET_PERIOD", "month"),
            ),
            provider_options=provider_options,
        )


def _prices(env: Mapping[str, str]) -> dict[str, float]:
    name = "SIGNAL_HUB_PRICES"
    pairs = parse_pairs(env, name, "model=usd_per_1M_tokens")
    return {model: parsed(f"{name} entry {model}", raw, float, NON_NEGATIVE_USD) for model, raw in pairs.items()}
