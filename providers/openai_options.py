"""`OpenAIOptions`: the engine's options (`RemoteOptions`) plus what only OpenAI's API takes.

Apart from `openai.py` so that settings can hold them without importing the `openai` SDK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .registry import ProviderSpec
from .remote_options import RemoteOptions, remote_fields_from_env

if TYPE_CHECKING:
    from .base import EmbeddingProvider
    from .settings import Settings

__all__ = ["OPENAI_PRICES", "OpenAIOptions"]

OPENAI_PRICES: Mapping[str, float] = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
"""USD per 1M input tokens of OpenAI's embedding models."""


@dataclass(frozen=True, kw_only=True)
class OpenAIOptions(RemoteOptions):
    """How the OpenAI provider packs, paces and retries. Every field has a working default."""

    dimensions: int | None = None
    """Shorter vectors from the v3 models (None: the model's native length)."""
    encoding_format: Literal["base64", "float"] = "base64"
    """Wire format of the vectors; base64 is 4x smaller. Use "float" for endpoints without base64."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OpenAIOptions:
        """The `SIGNAL_HUB_OPENAI_*` variables, checked (a bad one raises `ConfigurationError` naming it)."""
        return cls(**remote_fields_from_env(env, "SIGNAL_HUB_OPENAI", cls()))


def _build(settings: Settings, model: str | None, dimensions: int | None) -> EmbeddingProvider:
    from .openai import OpenAIProvider  # the SDK is imported only when OpenAI is chosen

    options = dataclasses.replace(settings.openai, dimensions=dimensions)
    return OpenAIProvider.from_settings(settings, model, options=options)


# The provider's settings are `Settings.openai` (SIGNAL_HUB_OPENAI_*) plus the SDK's own
# OPENAI_API_KEY / OPENAI_BASE_URL, read by `Settings.from_env` through `OpenAIOptions.from_env`.
PROVIDER = ProviderSpec(
    name="openai",
    factory=_build,
    summary="OpenAI's text-embedding-3-small/-large and ada-002 over the API; paid per token",
    order=10,
    price=lambda settings, model: OPENAI_PRICES.get(model),
    variables=("OPENAI_API_KEY", "SIGNAL_HUB_OPENAI_MODEL"),
)
