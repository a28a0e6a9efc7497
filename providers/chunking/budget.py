"""A chunk's token budget, counted by the active model's own tokenizer.

```python
budget = chunk_budget(provider, settings)       # 256 for the packaged MiniLM, 512 for OpenAI
budget.count_many(["def f():\n", "    pass\n"])  # tokens of each text, special tokens not included
```

The local model's tokenizer is read from its `tokenizer.json` (the model itself is not loaded);
OpenAI-style providers count with cl100k_base. The default fills the local model's window, so no
chunk is cut by it; for remote models 512 tokens keeps a chunk about a screenful.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from providers.base import EmbeddingProvider
from providers.errors import ConfigurationError, InputError
from providers.settings import Settings
from providers.text.tokens import default_tokenizer

__all__ = ["DEFAULT_REMOTE_CHUNK_TOKENS", "MIN_CHUNK_TOKENS", "TokenBudget", "chunk_budget", "tokenizer_json_budget"]

DEFAULT_REMOTE_CHUNK_TOKENS = 512
MIN_CHUNK_TOKENS = 16
_SPLITS_AT_WHITESPACE = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})


@dataclass(frozen=True)
class TokenBudget:
    """At most `max_tokens` per chunk, `overhead` (the model's special tokens) included."""

    max_tokens: int
    overhead: int
    tokenizer: str
    count_many: Callable[[list[str]], list[int]]
    """Tokens of each text, without the special tokens."""
    line_additive: bool = False
    """Whether a text's tokens are the sum of its lines' (no token spans a line break)."""

    @property
    def content_tokens(self) -> int:
        """What the text of one chunk may hold."""
        return self.max_tokens - self.overhead

    def count(self, text: str) -> int:
        """Tokens of one chunk as the model sees it, special tokens included."""
        return self.count_many([text])[0] + self.overhead


def chunk_budget(provider: EmbeddingProvider, settings: Settings, chunk_tokens: int | None = None) -> TokenBudget:
    """The budget for chunks embedded by `provider`; `chunk_tokens` overrides the default size."""
    if chunk_tokens is not None and chunk_tokens < MIN_CHUNK_TOKENS:
        raise InputError(f"chunk tokens must be at least {MIN_CHUNK_TOKENS}, not {chunk_tokens}.")
    if provider.name == "local":
        from providers.local_model.model_dir import available_local_models, max_seq_length

        known = available_local_models(settings)
        if provider.model not in known:
            raise ConfigurationError(f"unknown local model {provider.model!r}.")
        path = known[provider.model][0]
        window = chunk_tokens or max_seq_length(path)
        if not (path / "tokenizer.json").is_file():  # a model without a fast tokenizer: a byte a token, erring high
            return TokenBudget(window, 2, "utf8-bytes", lambda texts: [len(t.encode()) for t in texts], True)
        return tokenizer_json_budget(path / "tokenizer.json", window)
    tokenizer = default_tokenizer()

    def count_many(texts: list[str]) -> list[int]:
        return [tokenizer.count(text) for text in texts]

    return TokenBudget(chunk_tokens or DEFAULT_REMOTE_CHUNK_TOKENS, 0, tokenizer.name, count_many)


def tokenizer_json_budget(path: Path, max_tokens: int) -> TokenBudget:
    """A budget counted by a Hugging Face `tokenizer.json` (a sentence-transformers model's)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ConfigurationError(f"cannot read the model's tokenizer at {path}: {exc}") from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    overhead = len(tokenizer.encode("", add_special_tokens=True).ids)

    def count_many(texts: list[str]) -> list[int]:
        # Code repeats lines (blank ones, `return`, `}`): each distinct one is tokenized once.
        distinct = list(dict.fromkeys(texts))
        encoded = tokenizer.encode_batch_fast(distinct, add_special_tokens=False)
        counts = {text: len(encoding.ids) for text, encoding in zip(distinct, encoded, strict=True)}
        return [counts[text] for text in texts]

    if max_tokens <= overhead + MIN_CHUNK_TOKENS // 2:
        raise InputError(f"chunk tokens must be more than {overhead + MIN_CHUNK_TOKENS // 2} for this model.")
    # BERT-style pre-tokenizers split at whitespace first, so no token spans a line break.
    additive = _pre_tokenizer(path) in _SPLITS_AT_WHITESPACE
    return TokenBudget(max_tokens, overhead, path.parent.name, count_many, line_additive=additive)


def _pre_tokenizer(path: Path) -> str | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    return found.get("type") if isinstance(found, dict) else None
