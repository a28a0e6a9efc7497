"""The text a local model puts before a query or a document: its own prompts, or the configured ones.

sentence-transformers models name them in `config_sentence_transformers.json`:

```json
{"prompts": {"query": "Represent this query for searching relevant code: ", "document": ""}}
```

A prompt is text prepended before tokenizing, so it works the same on every backend. The document
prompt is the first of "document", "passage", "corpus" the model has, as in `encode_document`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from providers.base import InputType
from providers.errors import ConfigurationError

__all__ = ["Prompts", "model_prompts"]

_DOCUMENT_NAMES = ("document", "passage", "corpus")


@dataclass(frozen=True)
class Prompts:
    """The prompt of each input type, and those of the model's own (for naming the space)."""

    query: str = ""
    document: str = ""
    own_query: str = ""
    own_document: str = ""

    def of(self, input_type: InputType) -> str:
        return self.query if input_type == "query" else self.document

    @property
    def any(self) -> bool:
        """Whether the input type changes anything: some prompt is not empty."""
        return bool(self.query or self.document)

    def qualifier(self, input_type: InputType) -> str:
        """How the space names this input type: the type, and a digest of its prompt when it is not the model's."""
        own = self.own_query if input_type == "query" else self.own_document
        prompt = self.of(input_type)
        if prompt == own:
            return input_type
        return f"{input_type}~{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"

    def with_overrides(self, query: str | None, document: str | None) -> Prompts:
        return Prompts(
            query=self.query if query is None else query,
            document=self.document if document is None else document,
            own_query=self.own_query,
            own_document=self.own_document,
        )


def model_prompts(path: Path) -> Prompts:
    """The prompts a sentence-transformers model directory declares (none: both empty)."""
    config = path / "config_sentence_transformers.json"
    try:
        prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts") or {}
    except FileNotFoundError:
        return Prompts()
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"cannot read the prompts of the model at {path}: {config.name}: {exc}") from exc
    if not isinstance(prompts, dict) or not all(isinstance(v, str | None) for v in prompts.values()):
        raise ConfigurationError(f"{config} has `prompts` that are not names → texts.")
    query = prompts.get("query") or ""
    document = next((prompts[name] or "" for name in _DOCUMENT_NAMES if name in prompts), "")
    return Prompts(query, document, query, document)
