"""One frozen settings object, read from the environment only at the program's edge."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

# Light modules only (numpy at most): settings are read before any backend or SDK is chosen.
from .batching import OverlongPolicy, RequestLimits
from .encoders import LOCAL_BACKENDS, LocalBackend
from .errors import ConfigurationError
from .fallback import FallbackPolicy
from .long_texts import LONG_TEXT_POLICIES, LongTextPolicy
from .openai_options import OpenAIOptions

__all__ = ["Budget", "InputLimits", "Settings"]

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"

_Choice = TypeVar("_Choice", bound=str)

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
    device: str | None = None
    """None picks CUDA when available, else the CPU."""
    openai_model: str = DEFAULT_OPENAI_MODEL
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai: OpenAIOptions = field(default_factory=OpenAIOptions)
    """How the OpenAI provider packs, paces and retries (`SIGNAL_HUB_OPENAI_*`)."""
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
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if not _unexpanded(v)}
        data_dir = env.get("SIGNAL_HUB_DATA_DIR")
        return cls(
            provider=env.get("SIGNAL_HUB_PROVIDER", "local").strip().lower() or "local",
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            local_model=env.get("SIGNAL_HUB_LOCAL_MODEL", DEFAULT_LOCAL_MODEL),
            local_models={
                name: Path(path).expanduser()
                for name, path in _parse_pairs(env, "SIGNAL_HUB_LOCAL_MODELS", "name=/path/to/model").items()
            },
            local_batch_size=_optional(env, "SIGNAL_HUB_LOCAL_BATCH_SIZE", int, _POSITIVE_INT),
            local_backend=_choice(env, "SIGNAL_HUB_LOCAL_BACKEND", LOCAL_BACKENDS, "auto"),
            local_long_texts=_choice(env, "SIGNAL_HUB_LOCAL_LONG_TEXTS", LONG_TEXT_POLICIES, "truncate"),
            local_split_overlap=_number(env, "SIGNAL_HUB_LOCAL_SPLIT_OVERLAP", int, _NON_NEGATIVE_INT, 64),
            local_threads=_optional(env, "SIGNAL_HUB_LOCAL_THREADS", int, _POSITIVE_INT),
            device=env.get("SIGNAL_HUB_DEVICE") or None,
            openai_model=env.get("SIGNAL_HUB_OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai=_openai_settings(env),
            prices=_prices(env),
            fallback=FallbackPolicy(
                mode=env.get("SIGNAL_HUB_FALLBACK", "on_outage").strip().lower(),
                chain=tuple(
                    p.strip().lower()
                    for p in env.get("SIGNAL_HUB_FALLBACK_CHAIN", "openai,local").split(",")
                    if p.strip()
                ),
                failure_threshold=_number(env, "SIGNAL_HUB_CIRCUIT_FAILURES", int, _POSITIVE_INT, 3),
                cooldown_s=_number(env, "SIGNAL_HUB_CIRCUIT_COOLDOWN_S", float, _positive("seconds"), 60.0),
            ),
            cache=env.get("SIGNAL_HUB_CACHE", "on").strip().lower() not in {"off", "0", "false", "no"},
            shared_pacing=env.get("SIGNAL_HUB_SHARED_PACING", "on").strip().lower() not in {"off", "0", "false", "no"},
            vectors=_choice(env, "SIGNAL_HUB_VECTORS", VECTORS_MODES, "inline"),
            budget=Budget(
                soft_usd=_optional(env, "SIGNAL_HUB_BUDGET_SOFT_USD", float, _NON_NEGATIVE_USD),
                hard_usd=_optional(env, "SIGNAL_HUB_BUDGET_HARD_USD", float, _NON_NEGATIVE_USD),
                period=env.get("SIGNAL_HUB_BUDGET_PERIOD", "month"),
            ),
        )


def _openai_settings(env: Mapping[str, str]) -> OpenAIOptions:
    default = OpenAIOptions()
    return OpenAIOptions(
        rpm=_optional(env, "SIGNAL_HUB_OPENAI_RPM", float, _positive("requests per minute")),
        tpm=_optional(env, "SIGNAL_HUB_OPENAI_TPM", float, _positive("tokens per minute")),
        concurrency=_number(env, "SIGNAL_HUB_OPENAI_CONCURRENCY", int, _POSITIVE_INT, default.concurrency),
        request_timeout=_number(
            env, "SIGNAL_HUB_OPENAI_TIMEOUT_S", float, _positive("seconds"), default.request_timeout
        ),
        max_attempts=_number(env, "SIGNAL_HUB_OPENAI_MAX_ATTEMPTS", int, _POSITIVE_INT, default.max_attempts),
        max_retry_seconds=_number(
            env, "SIGNAL_HUB_OPENAI_MAX_RETRY_S", float, _positive("seconds"), default.max_retry_seconds
        ),
        overlong=_choice(env, "SIGNAL_HUB_OPENAI_OVERLONG", get_args(OverlongPolicy), default.overlong),
        limits=_request_limits(env, default.limits),
    )


def _request_limits(env: Mapping[str, str], default: RequestLimits) -> RequestLimits:
    input_tokens = _number(env, "SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS", int, _POSITIVE_INT, default.max_input_tokens)
    request_tokens = _number(
        env, "SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS", int, _POSITIVE_INT, default.max_request_tokens
    )
    if input_tokens > request_tokens:
        raise ConfigurationError(
            f"SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS ({input_tokens}) cannot exceed SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS "
            f"({request_tokens}): one text must fit in one request. Set SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS to at most "
            f"{request_tokens}."
        )
    return RequestLimits(
        max_inputs=_number(env, "SIGNAL_HUB_OPENAI_MAX_INPUTS", int, _POSITIVE_INT, default.max_inputs),
        max_input_tokens=input_tokens,
        max_request_tokens=request_tokens,
    )


def _unexpanded(value: str) -> bool:
    """A host that does not expand `${VAR}` in its config passes it literally: treat it as unset."""
    return value.startswith("${") and value.endswith("}")


def _parse_pairs(env: Mapping[str, str], name: str, shape: str) -> dict[str, str]:
    """Parse `key=value,key=value` from one variable."""
    pairs: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in env.get(name, "").split(","))):
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigurationError(f"{name} entry {entry!r} is not {shape}; separate several entries with commas.")
        pairs[key.strip()] = value.strip()
    return pairs


def _prices(env: Mapping[str, str]) -> dict[str, float]:
    name = "SIGNAL_HUB_PRICES"
    pairs = _parse_pairs(env, name, "model=usd_per_1M_tokens")
    return {model: _parsed(f"{name} entry {model}", raw, float, _NON_NEGATIVE_USD) for model, raw in pairs.items()}


_Number = TypeVar("_Number", int, float)
_POSITIVE_INT = ("a positive integer", lambda value: value >= 1)
_NON_NEGATIVE_INT = ("zero or a positive integer", lambda value: value >= 0)
_NON_NEGATIVE_USD = ("a non-negative number of US dollars", lambda value: math.isfinite(value) and value >= 0)


def _positive(unit: str) -> tuple[str, Callable[[float], bool]]:
    return f"a positive number of {unit}", lambda value: math.isfinite(value) and value > 0


def _optional(
    env: Mapping[str, str], name: str, parse: Callable[[str], _Number], rule: tuple[str, Callable[[Any], bool]]
) -> _Number | None:
    """The variable's value, or None when it is unset or empty."""
    raw = env.get(name, "").strip()
    return _parsed(name, raw, parse, rule) if raw else None


def _parsed(name: str, raw: str, parse: Callable[[str], _Number], rule: tuple[str, Callable[[Any], bool]]) -> _Number:
    accepted, holds = rule
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not holds(value):
        raise ConfigurationError(f"{name} must be {accepted}, got {raw!r}.")
    return value


def _number(
    env: Mapping[str, str],
    name: str,
    parse: Callable[[str], _Number],
    rule: tuple[str, Callable[[Any], bool]],
    default: _Number,
) -> _Number:
    value = _optional(env, name, parse, rule)
    return default if value is None else value


def _choice(env: Mapping[str, str], name: str, choices: tuple[_Choice, ...], default: _Choice) -> _Choice:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    for choice in choices:
        if raw == choice:
            return choice
    raise ConfigurationError(f"{name} must be one of: {', '.join(choices)}; got {env[name]!r}.")
