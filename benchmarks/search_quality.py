"""Code-search quality of the local provider: docstring → function retrieval over the stdlib.

    .venv/bin/python -m benchmarks.search_quality [--functions 3000]

Each function of the standard library (tests left out) that has a docstring and a body becomes
one query (its docstring) and one document (its source with the docstring removed). Every query
ranks all documents by cosine; the right answer is its own function. Reported: MRR@10 and
recall@10 for fp32 torch vs int8 ONNX Runtime, each with long documents truncated or split, and
the same over the queries whose function is longer than the model's window (where the policies
differ). Targets: int8's MRR@10 within 0.01 of fp32's (per policy). The policy row says which
long-text policy ranks better, with a paired bootstrap 95% interval of the MRR difference.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt

from benchmarks.corpus import stdlib_sources
from providers import Settings
from providers.local import LocalProvider
from providers.local_model.encoders import LocalBackend
from providers.local_model.long_texts import LongTextPolicy

_SKIPPED_DIRS = {"test", "tests", "idle_test"}
_MIN_DOCSTRING_WORDS = 3
_TOP_K = 10
_CONFIGS: list[tuple[LocalBackend, LongTextPolicy]] = [
    ("torch", "truncate"),
    ("onnx-int8", "truncate"),
    ("torch", "split"),
    ("onnx-int8", "split"),
]


@dataclass(frozen=True)
class RetrievalTask:
    queries: list[str]
    documents: list[str]
    """documents[i] answers queries[i]."""


@dataclass(frozen=True)
class Scores:
    mrr: float
    recall: float
    reciprocal_ranks: npt.NDArray[np.float64]


def functions_with_docstrings() -> Iterator[tuple[str, str]]:
    """(docstring, source without the docstring) for every documented stdlib function with a body."""
    for relative, lines in stdlib_sources():
        if _SKIPPED_DIRS & set(relative.parts):
            continue
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
                continue
            docstring = ast.get_docstring(node)
            if not docstring or len(docstring.split()) < _MIN_DOCSTRING_WORDS:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            doc_node = node.body[0]
            assert doc_node.end_lineno is not None and node.end_lineno is not None
            body = lines[first : doc_node.lineno - 1] + lines[doc_node.end_lineno : node.end_lineno]
            yield inspect.cleandoc(docstring), inspect.cleandoc("\n".join(body))


def build_task(functions: int) -> RetrievalTask:
    """Evenly spaced functions whose docstring is unique (a repeated docstring has no one answer)."""
    pairs = list(functions_with_docstrings())
    counts: dict[str, int] = {}
    for docstring, _ in pairs:
        counts[docstring] = counts.get(docstring, 0) + 1
    unique = [(q, d) for q, d in pairs if counts[q] == 1 and d.strip()]
    step = max(len(unique) / functions, 1.0)
    chosen = [unique[int(i * step)] for i in range(min(functions, len(unique)))]
    return RetrievalTask([q for q, _ in chosen], [d for _, d in chosen])


def score(queries: npt.NDArray[np.float32], documents: npt.NDArray[np.float32]) -> Scores:
    similarities = queries @ documents.T
    own = np.diagonal(similarities)
    # Rank of the right document: 1 + how many documents score strictly higher.
    ranks = 1 + np.sum(similarities > own[:, None], axis=1)
    reciprocal = np.where(ranks <= _TOP_K, 1.0 / ranks, 0.0)
    return Scores(float(reciprocal.mean()), float(np.mean(ranks <= _TOP_K)), reciprocal)


def paired_bootstrap(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], rounds: int = 2000) -> tuple[float, float]:
    """95% interval of mean(b - a) over queries, resampled with a fixed seed."""
    differences = b - a
    rng = np.random.default_rng(0)
    means = differences[rng.integers(0, len(differences), (rounds, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


async def embed_all(provider: LocalProvider, texts: list[str]) -> tuple[npt.NDArray[np.float32], set[int]]:
    vectors, truncated = [], set()
    for start in range(0, len(texts), 1000):
        result = await provider.embed(texts[start : start + 1000])
        vectors.append(result.vectors)
        truncated |= {start + i for i in result.truncated}
    return np.concatenate(vectors), truncated


async def evaluate(task: RetrievalTask, data_dir: Path) -> None:
    long_documents: set[int] = set()
    results: dict[tuple[str, str], Scores] = {}
    print(f"{len(task.queries)} queries and documents", flush=True)
    for backend, policy in _CONFIGS:
        provider = LocalProvider(backend=backend, long_texts=policy, data_dir=data_dir)
        started = time.perf_counter()
        queries, _ = await embed_all(provider, task.queries)
        documents, truncated = await embed_all(provider, task.documents)
        if policy == "truncate":
            long_documents |= truncated
        results[(backend, policy)] = score(queries, documents)
        print(f"  embedded with {backend}/{policy} in {time.perf_counter() - started:.0f} s", flush=True)
        await provider.aclose()
    report(results, sorted(long_documents), len(task.queries))


def report(results: dict[tuple[str, str], Scores], long_documents: list[int], total: int) -> None:
    print(f"\n{len(long_documents)} of {total} documents ({len(long_documents) / total:.0%}) exceed the model's window")
    print(f"\n{'backend':<10} {'policy':<9} {'MRR@10':>7} {'R@10':>6} {'MRR@10 long':>12} {'R@10 long':>10}")
    for (backend, policy), s in results.items():
        long_rr = s.reciprocal_ranks[long_documents]
        long_recall = float(np.mean(long_rr > 0)) if long_documents else float("nan")
        print(f"{backend:<10} {policy:<9} {s.mrr:7.4f} {s.recall:6.3f} {long_rr.mean():12.4f} {long_recall:10.3f}")
    print()
    passed = True
    for policy in ("truncate", "split"):
        fp32, int8 = results[("torch", policy)], results[("onnx-int8", policy)]
        gap = fp32.mrr - int8.mrr
        ok = gap <= 0.01
        passed &= ok
        print(
            f"int8 MRR@10 within 0.01 of fp32 ({policy}): {int8.mrr:.4f} vs {fp32.mrr:.4f}, gap {gap:+.4f}  "
            f"{'PASS' if ok else 'FAIL'}"
        )
    for backend in ("torch", "onnx-int8"):
        truncate, split = results[(backend, "truncate")], results[(backend, "split")]
        low, high = paired_bootstrap(truncate.reciprocal_ranks, split.reciprocal_ranks)
        low_long, high_long = paired_bootstrap(
            truncate.reciprocal_ranks[long_documents], split.reciprocal_ranks[long_documents]
        )
        better = "split" if low > 0 else "truncate" if high < 0 else "neither (interval spans 0)"
        print(
            f"split - truncate MRR@10 ({backend}): {split.mrr - truncate.mrr:+.4f} [95% {low:+.4f}, {high:+.4f}]; "
            f"long documents only [95% {low_long:+.4f}, {high_long:+.4f}] -> better: {better}"
        )
    print(f"\nresult: {'PASS' if passed else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--functions", type=int, default=3000, help="queries (= documents) to evaluate")
    args = parser.parse_args(argv)
    task = build_task(args.functions)
    # The ONNX export is cached where the server keeps it (SIGNAL_HUB_DATA_DIR, else the user's data dir).
    anyio.run(evaluate, task, Settings.from_env().resolved_data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
