"""Typed results of the MCP tools (their `outputSchema`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from .encoding import Encoding


class TruncatedText(BaseModel):
    index: int = Field(description="Position of the text in the call.")
    dropped_tokens: int = Field(description="Tokens past the model's window, not seen by the model.")


class _EmbeddingMeta(BaseModel):
    dimensions: int
    provider: str
    model: str
    space: str = Field(description="Vector space id (provider:model:dimensions:normalisation); never mix spaces.")
    tokens: int = Field(description="Input tokens as the provider counted them.")
    tokens_estimated: bool = Field(False, description="True when the server reported no usage: tokens is our count.")
    cost_usd: float | None = Field(description="Cost of this call in USD; null when the model's price is unknown.")
    encoding: Encoding
    cached: int = Field(description="Texts answered from the cache (no provider call, no cost).")
    fallback: bool = Field(description="True when another provider than the one asked for answered.")
    fallback_reason: str | None = Field(description="Why the fallback happened.")
    requested_space: str | None = Field(description="With a fallback: the space that was asked for.")
    warning: str | None = Field(default=None, description="Set when the soft spending limit was passed.")


class EmbedTextResult(_EmbeddingMeta):
    embedding: list[float] | str = Field(description="The vector: floats, or base64 of little-endian float32.")
    truncated: bool
    dropped_tokens: int


# Clients re-validate structured content against the output schema. A schema typing every
# number made the Python SDK's jsonschema check cost ~0.23 s per 100 x 384 floats (more than
# embedding them); typing each vector as an array or a string costs ~0.6 ms and says the same.
_VECTORS_SCHEMA = {
    "type": "array",
    "items": {
        "type": ["array", "string"],
        "description": "A vector: an array of numbers, or base64 of little-endian float32.",
    },
}


class EmbedBatchResult(_EmbeddingMeta):
    embeddings: Annotated[list[list[float]] | list[str], WithJsonSchema(_VECTORS_SCHEMA)] = Field(
        description="One vector per text, in the order given."
    )
    count: int
    truncated: list[TruncatedText] = Field(description="Texts cut to fit the model's window.")


class ProviderRef(BaseModel):
    provider: str
    model: str
    dimensions: int
    space: str


class SwitchProviderResult(ProviderRef):
    previous: ProviderRef
    space_changed: bool = Field(description="True when stored vectors no longer match new ones: re-embed them.")


class ProviderInfo(BaseModel):
    provider: str
    model: str | None
    dimensions: int | None
    space: str | None
    active: bool
    circuit: Literal["closed", "open", "half_open", "unavailable"]
    last_error: str | None
    retry_in_s: float = Field(description="Seconds until a provider with an open circuit is tried again.")


class ProvidersResult(BaseModel):
    providers: list[ProviderInfo]


class UsageOut(BaseModel):
    tokens: int
    requests: int
    embeddings: int
    usd: float
    unpriced_tokens: int = Field(description="Tokens of models with no known price, not included in usd.")
    cached: int = Field(description="Embeddings served from the cache.")
    saved_usd: float = Field(description="What the cached embeddings would have cost.")
    estimated_tokens: int = Field(0, description="Tokens we counted because the server reported no usage.")


class CostResult(UsageOut):
    scope: Literal["session", "all"]
    since: datetime | None
    total_usd: float
    by_provider: dict[str, UsageOut]
    by_model: dict[str, UsageOut]


class CostEstimateResult(BaseModel):
    provider: str
    model: str
    texts: int
    tokens: int = Field(description="Estimated input tokens (errs high).")
    usd: float | None = Field(description="Estimated cost in USD; null when the model's price is unknown.")
