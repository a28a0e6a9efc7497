"""Repository-level code search: one vector per file vs 40-line windows vs syntax chunks.

    .venv/bin/python -m benchmarks.repo_chunks [--files 100] [--queries 600]

Real standard-library modules are copied with their functions' docstrings blanked (line numbers
kept). Each docstring is a query; its answer is its function's `def` line. The tree is embedded
three ways with the default local model, and each query ranks all rows of a way by cosine:
* finding the function: a hit is a row of the right file that holds the `def` line and spans at
  most 80 lines (a screenful an agent can read);
* finding the file: rows grouped by file, each file scored by its best row.
Both as MRR@10 and Recall@10. Also: chunking time per 1,000 files against the time to embed the
chunks. Targets: syntax chunks beat windows at finding the function by >= 0.02 MRR@10 and one
vector per file at finding the file; chunking takes <= 10% of the embedding time.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt

from benchmarks.corpus import stdlib_sources
from providers import Settings
from providers.chunking.budget import chunk_budget
from providers.chunking.chunker import chunk_text, split_lines
from providers.local import LocalProvider

_SKIPPED_DIRS = {"test", "tests", "idle_test", "lib2to3", "turtledemo"}
_MIN_DOCSTRING_WORDS = 4
_MIN_FILE_BYTES, _MAX_FILE_BYTES = 4_000, 60_000
_TOP_K = 10
_WINDOW_LINES = 40
_SCREEN_LINES = 80
_BATCH = 256


@dataclass(frozen=True)
class Query:
    text: str
    path: str
    def_line: int
    """1-based."""


@dataclass(frozen=True)
class Row:
    path: str
    start: int
    end: int
    text: str


def blanked(relative: str, lines: list[str]) -> tuple[list[str], list[Query]] | None:
    """The file with each documented function's docstring blanked (same lines), and the queries."""
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return None
    out = list(lines)
    queries = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
            continue
        docstring = ast.get_docstring(node)
        if not docstring or len(docstring.split()) < _MIN_DOCSTRING_WORDS:
            continue
        doc = node.body[0]
        assert doc.end_lineno is not None
        indent = out[doc.lineno - 1][: len(out[doc.lineno - 1]) - len(out[doc.lineno - 1].lstrip())]
        out[doc.lineno - 1] = f'{indent}""'  # still a valid body; the words are gone
        for number in range(doc.lineno, doc.end_lineno):
            out[number] = ""
        queries.append(Query(inspect.cleandoc(docstring), relative, node.lineno))
    return out, queries


def build_tree(root: Path, files: int) -> tuple[dict[str, str], list[Query]]:
    """Copy `files` evenly spaced stdlib modules (with two or more documented functions) under `root`."""
    candidates = []
    for relative, lines in stdlib_sources():
        size = sum(len(line) + 1 for line in lines)
        if _SKIPPED_DIRS & set(relative.parts) or not _MIN_FILE_BYTES <= size <= _MAX_FILE_BYTES:
            continue
        found = blanked(relative.as_posix(), lines)
        if found is not None and len(found[1]) >= 2:
            candidates.append((relative.as_posix(), found))
    step = max(len(candidates) / files, 1.0)
    chosen = [candidates[int(i * step)] for i in range(min(files, len(candidates)))]
    texts, queries = {}, []
    for relative, (lines, found) in chosen:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        texts[relative] = "\n".join(lines) + "\n"
        path.write_text(texts[relative])
        queries.extend(found)
    counts = Counter(query.text for query in queries)  # a repeated docstring has no one answer
    return texts, [query for query in queries if counts[query.text] == 1]


def whole_files(texts: dict[str, str]) -> list[Row]:
    return [Row(path, 1, len(split_lines(text)), text) for path, text in texts.items()]


def windows(texts: dict[str, str]) -> list[Row]:
    rows = []
    for path, text in texts.items():
        lines = split_lines(text)
        for start in range(0, len(lines), _WINDOW_LINES):
            body = "".join(lines[start : start + _WINDOW_LINES])
            if body.strip():
                rows.append(Row(path, start + 1, min(start + _WINDOW_LINES, len(lines)), body))
    return rows


def syntax_chunks(root: Path, texts: dict[str, str], provider: LocalProvider) -> tuple[list[Row], float]:
    budget = chunk_budget(provider, Settings())
    started = time.perf_counter()
    rows = [
        Row(path, chunk.start_line, chunk.end_line, chunk.text)
        for path in texts
        for chunk in chunk_text((root / path).read_text(), path, budget)
    ]
    return rows, time.perf_counter() - started


async def embed(provider: LocalProvider, texts: list[str]) -> npt.NDArray[np.float32]:
    parts = [(await provider.embed(texts[i : i + _BATCH])).vectors for i in range(0, len(texts), _BATCH)]
    return np.concatenate(parts)


def scores(
    queries: list[Query], vectors: npt.NDArray[np.float32], rows: list[Row], q: npt.NDArray[np.float32]
) -> dict[str, float]:
    similarities = q @ vectors.T
    paths = sorted({row.path for row in rows})
    file_of = np.array([paths.index(row.path) for row in rows])
    fn_rr, fn_hit, file_rr, file_hit = [], [], [], []
    for i, query in enumerate(queries):
        top = np.argsort(-similarities[i])[:_TOP_K]
        ranks = [
            rank
            for rank, r in enumerate(top, 1)
            if rows[r].path == query.path
            and rows[r].start <= query.def_line <= rows[r].end
            and rows[r].end - rows[r].start + 1 <= _SCREEN_LINES
        ]
        fn_rr.append(1 / ranks[0] if ranks else 0.0)
        fn_hit.append(bool(ranks))
        best = np.full(len(paths), -np.inf)
        np.maximum.at(best, file_of, similarities[i])
        file_rank = 1 + int(np.sum(best > best[paths.index(query.path)]))
        file_rr.append(1 / file_rank if file_rank <= _TOP_K else 0.0)
        file_hit.append(file_rank <= _TOP_K)
    return {
        "fn_mrr": float(np.mean(fn_rr)),
        "fn_recall": float(np.mean(fn_hit)),
        "file_mrr": float(np.mean(file_rr)),
        "file_recall": float(np.mean(file_hit)),
    }


async def evaluate(files: int, max_queries: int) -> int:
    provider = LocalProvider(data_dir=Settings.from_env().resolved_data_dir)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        texts, queries = build_tree(root, files)
        if len(queries) > max_queries:
            step = len(queries) / max_queries
            queries = [queries[int(i * step)] for i in range(max_queries)]
        chunks, chunk_s = syntax_chunks(root, texts, provider)
        print(f"{len(texts)} files, {len(queries)} queries (docstrings blanked in the tree)", flush=True)
        q = await embed(provider, [query.text for query in queries])
        results, embed_s = {}, 0.0
        for name, rows in [("one vector per file", whole_files(texts)), ("40-line windows", windows(texts)),
                           ("syntax chunks", chunks)]:  # fmt: skip
            started = time.perf_counter()
            vectors = await embed(provider, [row.text for row in rows])
            if name == "syntax chunks":
                embed_s = time.perf_counter() - started
            results[name] = (len(rows), scores(queries, vectors, rows, q))
            print(f"  embedded {name}: {len(rows)} rows", flush=True)
    await provider.aclose()
    print("\n| rows | count | function MRR@10 | function R@10 | file MRR@10 | file R@10 |\n|---|---|---|---|---|---|")
    for name, (count, s) in results.items():
        print(
            f"| {name} | {count} | {s['fn_mrr']:.3f} | {s['fn_recall']:.3f} "
            f"| {s['file_mrr']:.3f} | {s['file_recall']:.3f} |"
        )
    share = chunk_s / embed_s if embed_s else float("inf")
    print(
        f"\nchunking: {chunk_s * 1000 / len(texts):.2f} s per 1,000 files; {chunk_s:.2f} s against "
        f"{embed_s:.1f} s to embed the chunks ({share:.1%})"
    )
    syntax, window, whole = (
        results["syntax chunks"][1],
        results["40-line windows"][1],
        results["one vector per file"][1],
    )
    checks = [
        ("syntax beats windows at finding the function by >= 0.02", syntax["fn_mrr"] - window["fn_mrr"] >= 0.02),
        ("syntax beats one vector per file at finding the file", syntax["file_mrr"] > whole["file_mrr"]),
        ("chunking <= 10% of the embedding time", share <= 0.10),
    ]
    for label, ok in checks:
        print(f"{label}: {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=100, help="stdlib modules to copy (default 100)")
    parser.add_argument("--queries", type=int, default=600, help="at most this many docstring queries (default 600)")
    args = parser.parse_args(argv)
    return anyio.run(evaluate, args.files, args.queries)


if __name__ == "__main__":
    sys.exit(main())
