"""What `rank_texts` needs besides the embedding: its checks, and the query and candidates as one answer.

The candidates are documents and the query is a query; for a provider that tells the two apart
they are two calls, which `with_query` puts back into one answer (the query's vector first).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from providers.base import INPUT_TYPES, EmbeddingResult
from providers.errors import InputError
from providers.settings import InputLimits

__all__ = ["check_input_type", "check_query", "with_query", "without_query"]


def check_input_type(input_type: object) -> None:
    if input_type not in INPUT_TYPES:
        raise InputError(f"input_type {input_type!r} is not one of: {', '.join(INPUT_TYPES)}.")


def with_query(documents: EmbeddingResult, query: EmbeddingResult) -> EmbeddingResult:
    """The candidates' call with the query's vector first and its cost, tokens and cache counted in."""
    cost = None if documents.cost_usd is None or query.cost_usd is None else documents.cost_usd + query.cost_usd
    return dataclasses.replace(
        documents,
        vectors=np.concatenate([query.vectors, documents.vectors]),
        tokens=documents.tokens + query.tokens,
        tokens_estimated=documents.tokens_estimated or query.tokens_estimated,
        requests=documents.requests + query.requests,
        truncated={**query.truncated, **{i + 1: dropped for i, dropped in documents.truncated.items()}},
        cost_usd=cost,
        cached=documents.cached + query.cached,
        warning=documents.warning or query.warning,
    )


def without_query(both: EmbeddingResult) -> EmbeddingResult:
    """A one-call answer's candidates alone (its query, row 0, is embedded again as a query)."""
    truncated = {i - 1: dropped for i, dropped in both.truncated.items() if i}
    return dataclasses.replace(both, vectors=both.vectors[1:], truncated=truncated)


def check_query(query: object, limits: InputLimits) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InputError("query is empty or not a string: give the text to look for.")
    if len(query) > limits.max_text_chars:
        raise InputError(f"query is longer than {limits.max_text_chars:,} characters: shorten it.")
