"""Chunks by syntax: definitions are the units, split at their children when too big, small neighbours merged.

```python
spans = syntax_spans(tree.root_node, costs, limit, "python", line_count)
# [Span(first=0, last=41, symbol="JSONDecoder", defines=True), ...]
```

The split-then-merge of cAST, in whole lines: a part of the tree that fits the budget is one
piece; one that does not is split at its children. Lines between children (comments,
decorators, a class's header) go with the child after them; closing lines with the one before.
Small pieces merge with the next one up to the budget, and a small piece before a split
definition joins that definition's first chunk; nothing after a split definition joins its last
chunk, so the end of one function is never glued to the start of the next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from providers.chunking.languages import definition_name
from providers.chunking.windows import LineCosts, line_windows

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["Span", "node_lines", "syntax_spans"]

_SYMBOL_SEARCH_DEPTH = 3
"""How deep under a piece's nodes its definition may be (e.g. export > lexical_declaration > declarator)."""


@dataclass(frozen=True)
class Span:
    first: int
    last: int
    """Line indexes, 0-based, inclusive."""
    symbol: str | None
    defines: bool
    """Whether the definition `symbol` starts in this span (else it is only the enclosing one)."""


@dataclass
class _Group:
    spans: list[Span]
    open_end: bool
    """Whether the next piece may join the last span: not after a split definition."""


def node_lines(node: Node) -> tuple[int, int]:
    """The first and last line a node covers (a node ending at column 0 ends on the line before)."""
    first, (last, column) = node.start_point.row, node.end_point
    if column == 0 and last > first:
        last -= 1
    return first, last


def syntax_spans(root: Node, costs: LineCosts, limit: int, language: str, line_count: int) -> list[Span]:
    """Spans covering lines 0..line_count-1 in order, each within `limit` tokens unless one line is over it."""
    splitter = _Splitter(costs, limit, language)
    last = line_count - 1
    if costs(0, last) <= limit:
        symbol, defines = splitter.symbol_of(root.children, 0, last, None)
        return [Span(0, last, symbol, defines)]
    return splitter.split(root.children, 0, last, None)


class _Splitter:
    def __init__(self, costs: LineCosts, limit: int, language: str) -> None:
        self.costs = costs
        self.limit = limit
        self.language = language

    def split(self, nodes: list[Node], first: int, last: int, scope: str | None) -> list[Span]:
        """Chunks of lines first..last, which hold `nodes` (and lines around them)."""
        parts = _partition(nodes, first, last)
        if not parts:
            return self.windows(first, last, scope)
        if len(parts) == 1 and len(parts[0][0]) == 1 and not parts[0][0][0].children:
            return self.windows(first, last, scope)  # one token over many lines, e.g. a long string
        groups: list[_Group] = []
        for part_nodes, start, end in parts:
            if self.costs(start, end) <= self.limit:
                symbol, defines = self.symbol_of(part_nodes, start, end, scope)
                groups.append(_Group([Span(start, end, symbol, defines)], open_end=True))
            else:
                spans = self.split_part(part_nodes, start, end, scope)
                groups.append(_Group(spans, open_end=not spans[0].defines or spans[0].symbol == scope))
        return self.merge(groups)

    def split_part(self, nodes: list[Node], first: int, last: int, scope: str | None) -> list[Span]:
        definitions = [node for node in nodes if definition_name(node, self.language) is not None]
        if len(nodes) > 1 and len(definitions) == 1:  # e.g. `export class X {`: the definition is the part
            nodes = definitions
        if len(nodes) > 1:  # nodes sharing lines: split at their children together
            children = [child for node in nodes for child in (node.children or [node])]
            if len(children) == len(nodes):
                return self.windows(first, last, scope)
            return self.split(children, first, last, scope)
        node = nodes[0]
        name = definition_name(node, self.language)
        if name is None:
            return self.split(node.children, first, last, scope)
        inner = f"{scope}.{name}" if scope else name
        spans = self.split(node.children, first, last, inner)
        return [replace(spans[0], symbol=inner, defines=True), *spans[1:]]

    def windows(self, first: int, last: int, scope: str | None) -> list[Span]:
        return [Span(start, end, scope, False) for start, end in line_windows(self.costs, first, last, self.limit)]

    def merge(self, groups: list[_Group]) -> list[Span]:
        spans: list[Span] = []
        open_end = False  # may the last span take in the next piece?
        for group in groups:
            head, *rest = group.spans
            if spans and open_end and self.costs(spans[-1].first, head.last) <= self.limit:
                spans[-1] = _joined(spans[-1], head)
            else:
                spans.append(head)
            spans.extend(rest)
            open_end = group.open_end
        return spans

    def symbol_of(self, nodes: list[Node], first: int, last: int, scope: str | None) -> tuple[str | None, bool]:
        """The first definition starting in lines first..last among `nodes` (searched a few levels down)."""
        level = list(nodes)
        for _ in range(_SYMBOL_SEARCH_DEPTH + 1):
            below: list[Node] = []
            for node in level:
                if not first <= node.start_point.row <= last:
                    continue
                name = definition_name(node, self.language)
                if name is not None:
                    return (f"{scope}.{name}" if scope else name), True
                below.extend(node.children)
            if not below:
                break
            level = below
        return scope, False


def _partition(nodes: list[Node], first: int, last: int) -> list[tuple[list[Node], int, int]]:
    """Lines first..last cut at the nodes' last lines: each part ends with a node; nodes sharing a line share a part."""
    parts: list[tuple[list[Node], int, int]] = []
    cursor = first
    for node in nodes:
        start, end = node_lines(node)
        end = min(end, last)
        if parts and start < cursor:  # on a line the part before holds: the same part
            part_nodes, part_start, part_end = parts[-1]
            parts[-1] = ([*part_nodes, node], part_start, max(part_end, end))
            cursor = max(cursor, end + 1)
        elif end >= cursor:
            parts.append(([node], cursor, end))
            cursor = end + 1
    if parts and cursor <= last:  # closing lines go with the last part
        part_nodes, part_start, _ = parts[-1]
        parts[-1] = (part_nodes, part_start, last)
    return parts


def _joined(a: Span, b: Span) -> Span:
    symbol, defines = (a.symbol, True) if a.defines else (b.symbol, b.defines) if b.defines else (a.symbol, False)
    return Span(a.first, b.last, symbol, defines)
