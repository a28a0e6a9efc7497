"""One file's text into chunks: by syntax where tree-sitter knows the language, else in windows.

```python
for chunk in chunk_text(source, "json/decoder.py", budget):
    chunk.id, chunk.symbol    # "json/decoder.py:332-354", "JSONDecoder.raw_decode"
```

Every line of the file is in exactly one chunk, in order. A file that does not parse (a syntax
error) is chunked in windows like any text. A chunk over the budget by the tokenizer's real count
(BPE tokens can span a line break) is split again into smaller windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from providers.chunking.budget import TokenBudget
from providers.chunking.languages import language_of, parser_for
from providers.chunking.syntax import Span, syntax_spans
from providers.chunking.windows import LineCosts, line_windows, paragraph_windows

__all__ = ["FileChunk", "chunk_text", "split_lines"]


@dataclass(frozen=True)
class FileChunk:
    """A chunk and where it is: what each output row carries beside its vector."""

    id: str
    """`path:start_line-end_line`."""
    text: str
    path: str
    start_line: int
    end_line: int
    """1-based, inclusive."""
    language: str
    symbol: str | None
    sha256: str
    tokens: int
    """In the budget's tokenizer, special tokens included."""

    def row(self) -> dict[str, object]:
        """The fields an output row carries beside the vector."""
        return {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "language": self.language,
            "symbol": self.symbol,
            "sha256": self.sha256,
        }


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split at "\\n" only (as tree-sitter counts rows)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def chunk_text(text: str, path: str, budget: TokenBudget, language: str | None = None) -> list[FileChunk]:
    """The chunks of one file's text; none when it is empty or only whitespace."""
    if not text.strip():
        return []
    language = language or language_of(PurePosixPath(path))  # type: ignore[arg-type]
    lines = split_lines(text)
    costs = LineCosts(budget.count_many(lines))
    limit = budget.content_tokens
    spans = _syntax(text, lines, costs, limit, language)
    if spans is None:
        spans = [Span(a, b, None, False) for a, b in paragraph_windows(lines, costs, 0, len(lines) - 1, limit)]
    spans = _blank_lines_go_back(_without_blank_spans(spans, lines), lines)
    chunks = []
    for span in _within_budget(spans, lines, costs, budget):
        body = "".join(lines[span.first : span.last + 1])
        chunks.append(
            FileChunk(
                id=f"{path}:{span.first + 1}-{span.last + 1}",
                text=body,
                path=path,
                start_line=span.first + 1,
                end_line=span.last + 1,
                language=language,
                symbol=span.symbol,
                sha256=hashlib.sha256(body.encode("utf-8", errors="surrogatepass")).hexdigest(),
                tokens=costs(span.first, span.last) + budget.overhead,
            )
        )
    return chunks


def _syntax(text: str, lines: list[str], costs: LineCosts, limit: int, language: str) -> list[Span] | None:
    parser = parser_for(language)
    if parser is None:
        return None
    tree = parser.parse(text.encode("utf-8", errors="surrogatepass"))
    if tree.root_node.has_error:  # a syntax error (or a dialect the grammar lacks): windows are safe
        return None
    return syntax_spans(tree.root_node, costs, limit, language, len(lines))


def _without_blank_spans(spans: list[Span], lines: list[str]) -> list[Span]:
    """Blank-only spans joined to the span before (the first to the one after): a blank text embeds nothing."""
    kept: list[Span] = []
    pending: Span | None = None
    for span in spans:
        if pending is not None:
            span = Span(pending.first, span.last, span.symbol, span.defines)
            pending = None
        if any(line.strip() for line in lines[span.first : span.last + 1]):
            kept.append(span)
        elif kept:
            kept[-1] = Span(kept[-1].first, span.last, kept[-1].symbol, kept[-1].defines)
        else:
            pending = span
    return kept


def _blank_lines_go_back(spans: list[Span], lines: list[str]) -> list[Span]:
    """A span's leading blank lines end the span before it, so each chunk starts with code."""
    for index in range(1, len(spans)):
        span = spans[index]
        first = span.first
        while first < span.last and not lines[first].strip():
            first += 1
        if first != span.first:
            before = spans[index - 1]
            spans[index - 1] = Span(before.first, first - 1, before.symbol, before.defines)
            spans[index] = Span(first, span.last, span.symbol, span.defines)
    return spans


def _within_budget(spans: list[Span], lines: list[str], costs: LineCosts, budget: TokenBudget) -> Iterator[Span]:
    """Spans as planned, except those the tokenizer counts over the budget as a whole: those in smaller windows."""
    if budget.line_additive:  # e.g. WordPiece, which never joins across a line: the sums are exact
        yield from spans
        return
    texts = ["".join(lines[span.first : span.last + 1]) for span in spans]
    for span, real in zip(spans, budget.count_many(texts), strict=True):
        yield from _refit(span, real, lines, costs, budget)


def _refit(span: Span, real: int, lines: list[str], costs: LineCosts, budget: TokenBudget) -> Iterator[Span]:
    if real <= budget.content_tokens or span.first == span.last:
        yield span
        return
    limit = max(1, costs(span.first, span.last) * budget.content_tokens // max(real, 1) - 1)
    pieces = line_windows(costs, span.first, span.last, limit)
    if len(pieces) == 1:  # cannot shrink by the estimate: one line at a time
        pieces = [(line, line) for line in range(span.first, span.last + 1)]
    texts = ["".join(lines[a : b + 1]) for a, b in pieces]
    for index, ((a, b), count) in enumerate(zip(pieces, budget.count_many(texts), strict=True)):
        piece = Span(a, b, span.symbol, span.defines and index == 0)
        yield from _refit(piece, count, lines, costs, budget)
