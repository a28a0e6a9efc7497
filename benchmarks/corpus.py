"""Deterministic benchmark corpora cut from this interpreter's own standard library source.

```python
from benchmarks.corpus import code_chunks, one_line_snippets

chunks = code_chunks(5000)          # 40-line chunks of real Python code
snippets = one_line_snippets(1000)  # distinct single lines of code
```

The same interpreter always gives the same texts in the same order: files are read in sorted
path order, third-party `site-packages` are left out, and blank chunks are skipped (the API
rejects them). Different Python versions ship different source, so compare runs on one.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

__all__ = ["code_chunks", "one_line_snippets", "stdlib_sources"]

_MIN_SNIPPET_CHARS = 12


def stdlib_sources(root: Path | None = None) -> Iterator[tuple[Path, list[str]]]:
    """Each readable `.py` file under the standard library, in sorted order, with its lines."""
    base = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    for path in sorted(base.rglob("*.py")):
        relative = path.relative_to(base)
        if "site-packages" in relative.parts or "dist-packages" in relative.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a few test fixtures are deliberately not UTF-8
        yield relative, text.splitlines()


def code_chunks(n: int, lines: int = 40) -> list[str]:
    """The first `n` non-blank chunks of `lines` consecutive source lines."""
    if n < 0 or lines < 1:
        raise ValueError("n must be >= 0 and lines >= 1")
    chunks: list[str] = []
    for _, source in stdlib_sources():
        for start in range(0, len(source), lines):
            chunk = "\n".join(source[start : start + lines])
            if chunk.strip():
                chunks.append(chunk)
                if len(chunks) == n:
                    return chunks
    raise ValueError(f"the standard library holds only {len(chunks)} chunks of {lines} lines; asked for {n}")


def one_line_snippets(n: int) -> list[str]:
    """The first `n` distinct stripped source lines of at least a dozen characters."""
    if n < 0:
        raise ValueError("n must be >= 0")
    seen: dict[str, None] = {}
    if n == 0:
        return []
    for _, source in stdlib_sources():
        for line in source:
            snippet = line.strip()
            if len(snippet) >= _MIN_SNIPPET_CHARS and snippet not in seen:
                seen[snippet] = None
                if len(seen) == n:
                    return list(seen)
    raise ValueError(f"the standard library holds only {len(seen)} distinct lines; asked for {n}")
