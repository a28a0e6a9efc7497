"""The local provider's own variables: prompts, remote code and a weights pin (`SIGNAL_HUB_LOCAL_*`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from providers.errors import ConfigurationError

__all__ = ["LocalOptions"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class LocalOptions:
    """What `Settings.provider_options["local"]` holds when a `SIGNAL_HUB_LOCAL_*` variable is set."""

    query_prompt: str | None = None
    """Text put before every query instead of the model's own query prompt (None: the model's)."""
    document_prompt: str | None = None
    """Text put before every document instead of the model's own document prompt (None: the model's)."""
    trust_remote_code: bool = False
    """Run a model's own Python code (some Hugging Face models need it); off unless asked for."""
    model_sha256: str | None = None
    """The SHA-256 the chosen model's weights file must have."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalOptions:
        trust = env.get("SIGNAL_HUB_LOCAL_TRUST_REMOTE_CODE", "").strip().lower()
        if trust not in _TRUE | _FALSE:
            raise ConfigurationError(f"SIGNAL_HUB_LOCAL_TRUST_REMOTE_CODE must be 1 or 0, got {trust!r}.")
        pin = env.get("SIGNAL_HUB_LOCAL_MODEL_SHA256", "").strip().lower() or None
        if pin is not None and not _SHA256.fullmatch(pin):
            raise ConfigurationError(
                "SIGNAL_HUB_LOCAL_MODEL_SHA256 must be the 64 hex digits of the weights file's SHA-256 "
                "(`sha256sum model.safetensors`)."
            )
        # Set to empty, a prompt variable means "no prompt"; unset, the model's own prompt stays.
        return cls(
            query_prompt=env.get("SIGNAL_HUB_LOCAL_QUERY_PROMPT"),
            document_prompt=env.get("SIGNAL_HUB_LOCAL_DOCUMENT_PROMPT"),
            trust_remote_code=trust in _TRUE,
            model_sha256=pin,
        )
