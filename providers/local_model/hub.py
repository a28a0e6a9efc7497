"""Local models named by a Hugging Face id (`owner/name`): found in the Hub's cache, else downloaded once.

The snapshot is then a model directory like any other (ONNX export, prompts, weights pin). Where
nothing can be downloaded, the start fails with one line saying how to provide the model instead.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

# Read now, while HF_HUB_OFFLINE is the user's: a local model's load sets it for the process later.
import huggingface_hub.constants  # noqa: F401

from providers.errors import ConfigurationError

__all__ = ["hub_model_directory", "is_hub_id"]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
# What a sentence-transformers model needs; other runtimes' copies of the weights are not fetched.
_SKIPPED = ["*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "*.gguf", "tf_model*", "flax_model*"]


def is_hub_id(name: str) -> bool:
    """Whether a model name reads as a Hugging Face id and not as a path."""
    return bool(_HUB_ID.fullmatch(name)) and not Path(name).expanduser().exists()


def hub_model_directory(repo_id: str, *, trust_remote_code: bool) -> Path:
    """The local snapshot of `repo_id`: the Hub's cache, else a download (with the code it runs, if trusted)."""
    path = _snapshot(repo_id, ignore=_SKIPPED)
    if trust_remote_code:
        # A model whose code lives in another repository ("owner/code--module.Class") needs that too.
        for code_repo in _code_repositories(path):
            _snapshot(code_repo, allow=["*.py", "*.json"])
    return path


def _snapshot(repo_id: str, *, ignore: list[str] | None = None, allow: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, ignore_patterns=ignore, allow_patterns=allow))
    except LocalEntryNotFoundError:
        pass
    logger.info("downloading %s from Hugging Face", repo_id)
    try:
        return Path(snapshot_download(repo_id, ignore_patterns=ignore, allow_patterns=allow))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigurationError(
            f"local model {repo_id!r} is not on this machine and could not be downloaded ({reason}); "
            f"download it where you can (`hf download {repo_id} --local-dir DIR`) and give its path: "
            f"SIGNAL_HUB_LOCAL_MODELS={repo_id}=DIR."
        ) from exc


def _code_repositories(path: Path) -> list[str]:
    try:
        auto_map = json.loads((path / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return []
    references = [v for value in auto_map.values() for v in (value if isinstance(value, list) else [value])]
    return sorted({ref.split("--")[0] for ref in references if isinstance(ref, str) and "--" in ref})
