"""Typed results of the MCP tools (their `outputSchema`).

Agents pay for every byte of `tools/list` on every turn, so the schemas carry types only; the
README's tools table says what each field means.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, WithJsonSchema

from server.tools.encoding import Encoding

Omitted = Annotated[str | None, WithJsonSchema({"type": "string"})]
"""A text field left out of the answer when it has nothing to say (never sent as null)."""


class TruncatedText(BaseModel):
    index: int
    dropped_tokens: int


class _EmbeddingMeta(BaseModel):
    dimensions: int
    provider: str
    model: str
    space: str
    tokens: int
    tokens_estimated: bool = False
    cost_usd: float | None
    encoding: Encoding
    cached: int
    fallback: bool
    fallback_reason: str | None
    requested_space: str | None
    warning: str | None = None
    vectors_included: bool = True


# A vector is an array of numbers or a base64 string. Typing each number made clients' schema
# checks cost more than embedding; `anyOf` (not a `type` array) is what every host can read.
_VECTOR_SCHEMA = {"anyOf": [{"type": "array"}, {"type": "string"}]}


class EmbedTextResult(_EmbeddingMeta):
    embedding: Annotated[list[float] | str | None, WithJsonSchema(_VECTOR_SCHEMA)] = None
    truncated: bool
    dropped_tokens: int


class EmbedBatchResult(_EmbeddingMeta):
    embeddings: Annotated[
        list[list[float]] | list[str] | None, WithJsonSchema({"type": "array", "items": _VECTOR_SCHEMA})
    ] = None
    count: int
    truncated: list[TruncatedText]
    more: Omitted = None


class _CallMeta(BaseModel):
    """What an answer computed from embeddings cost, and the space it was computed in."""

    space: str
    tokens: int
    cost_usd: float | None
    cached: int
    fallback: bool
    fallback_reason: Omitted = None
    warning: Omitted = None
    more: Omitted = None


class RankedText(BaseModel):
    index: int
    score: float
    preview: str


class RankResult(_CallMeta):
    results: list[RankedText]
    candidates: int


class DuplicateGroup(BaseModel):
    indexes: list[int]
    size: int
    min_score: float


class DuplicatesResult(_CallMeta):
    groups: list[DuplicateGroup]
    texts: int
    pairs_checked: int
    threshold: float


class ProviderRef(BaseModel):
    provider: str
    model: str
    dimensions: int
    space: str


class SwitchProviderResult(ProviderRef):
    previous: ProviderRef
    space_changed: bool
    warning: Omitted = None


class ProviderInfo(BaseModel):
    provider: str
    model: str | None
    dimensions: int | None
    space: str | None
    active: bool
    input_types: bool | None = None
    """False: the provider ignores `input_type` (queries and documents embed alike); None: unknown (unavailable)."""
    circuit: Literal["closed", "open", "half_open", "unavailable"]
    last_error: str | None
    retry_in_s: float


class ProvidersResult(BaseModel):
    providers: list[ProviderInfo]


class UsageOut(BaseModel):
    tokens: int
    requests: int
    embeddings: int
    usd: float
    unpriced_tokens: int
    cached: int
    saved_usd: float
    estimated_tokens: int = 0


class CostResult(UsageOut):
    scope: Literal["session", "all"]
    since: datetime | None
    total_usd: float
    session_usd: float
    period: str
    period_usd: float
    all_time_usd: float
    by_provider: dict[str, UsageOut]
    by_model: dict[str, UsageOut]
    by_client: dict[str, UsageOut]
    """By the HTTP client (token name) that made the calls; "(none)" for stdio, the CLI and Python."""


class CostEstimateResult(BaseModel):
    provider: str
    model: str
    texts: int
    tokens: int
    usd: float | None
    batch_usd: float | None = None
