"""What a job's input comes to before anything is sent: files, chunks, tokens, and where the tokens are.

```python
totals = InputTotals()
totals.add("vendor/lib/a.py", tokens=812)
totals.top_directories(10)    # [{"directory": "vendor/", "tokens": 812, "share": 1.0}, ...]
```
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

__all__ = ["InputTotals"]


@dataclass
class InputTotals:
    files: int = 0
    """Files (and other sources) that give chunks to embed or carry over."""
    chunks: int = 0
    """Every chunk of the output: to embed and carried over."""
    to_embed: int = 0
    """Chunks to embed (not carried over from the last output); some may still be in the cache."""
    tokens: int = 0
    """Tokens of the chunks to embed, by the model's tokenizer (the cache may answer some)."""
    failed: int = 0
    """Records that cannot be embedded (skipped where the caller allows it)."""
    by_directory: Counter[str] = field(default_factory=Counter)
    """Tokens to embed under each directory, subdirectories included."""

    def add(self, path: str | None, tokens: int) -> None:
        """One chunk to embed, from `path` (relative, with `/`; None: not from a file tree)."""
        self.chunks += 1
        self.to_embed += 1
        self.tokens += tokens
        if path is not None:
            for parent in PurePosixPath(path).parents:
                if str(parent) != ".":
                    self.by_directory[f"{parent}/"] += tokens

    def top_directories(self, count: int = 10) -> list[dict[str, object]]:
        """The directories holding the most tokens to embed, with their share of all of them."""
        ranked = sorted(self.by_directory.items(), key=lambda item: (-item[1], item[0].count("/"), item[0]))
        return [
            {"directory": name, "tokens": tokens, "share": round(tokens / self.tokens, 3) if self.tokens else 0.0}
            for name, tokens in ranked[:count]
        ]
