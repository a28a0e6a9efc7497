"""`cohere`: Cohere's embed-v4.0 over its v2 HTTP API.

```bash
COHERE_API_KEY=...  SIGNAL_HUB_PROVIDER=cohere  signal-hub-embeddings
```

`POST {base}/embed` (base `https://api.cohere.com/v2`) with a bearer key and `{"model", "texts",
"input_type": "search_query" | "search_document", "embedding_types": ["float"],
"output_dimension"}`; the answer holds `embeddings.float` in request order and the billed
tokens in `meta.billed_units.input_tokens`. A request holds at most 96 texts; embed-v4.0 reads
128K tokens per text (embed-english-v3.0 512). Cohere documents no rate-limit headers: a 429 is
retried with backoff (or after `retry-after`, if sent), except a trial key's monthly limit,
which is a quota error.

Plain HTTP through the shared engine rather than the `cohere` SDK: its async client is well
kept, but it retries on its own, raises one exception class per status with the headers tucked
away, and adds a sizeable dependency for one JSON POST.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from providers.registry import ProviderSpec
from providers.remote.batching import RequestLimits
from providers.remote.http_json import HttpStatusError
from providers.remote.vendor import VendorProvider, vendor_factory
from providers.remote.vendor_spec import Model, Vendor, read_vendor_options

if TYPE_CHECKING:
    from providers.base import InputType

__all__ = ["COHERE", "INPUT_WORDS", "CohereProvider"]

INPUT_WORDS: Mapping[InputType, str] = {"document": "search_document", "query": "search_query"}
"""Our input types as Cohere's `input_type`."""

COHERE = Vendor(
    name="cohere",
    label="Cohere",
    key_variable="COHERE_API_KEY",
    base_url="https://api.cohere.com/v2",
    default_model="embed-v4.0",
    models={
        "embed-v4.0": Model(
            dimensions=1536,
            lengths=(256, 512, 1024),
            price=0.12,
            limits=RequestLimits(max_inputs=96, max_input_tokens=128_000, max_request_tokens=96 * 128_000),
        ),
        "embed-english-v3.0": Model(
            dimensions=1024,
            price=0.10,
            limits=RequestLimits(max_inputs=96, max_input_tokens=512, max_request_tokens=96 * 512),
        ),
    },
)


class CohereProvider(VendorProvider):
    """Cohere's `/v2/embed`."""

    name = "cohere"
    vendor = COHERE

    def _payload(self, texts: list[str], input_type: InputType) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "texts": texts,
            "input_type": INPUT_WORDS[input_type],
            "embedding_types": ["float"],
        }
        if self._dimensions_param is not None:
            body["output_dimension"] = self._dimensions_param
        return "embed", body

    def _read(self, body: Any, count: int) -> tuple[list[Any], int | None]:
        billed = (body.get("meta") or {}).get("billed_units") or {}
        return list(body["embeddings"]["float"]), billed.get("input_tokens")

    def _too_large(self, error: HttpStatusError) -> bool:
        detail = error.detail.lower()
        return error.status == 413 or (error.status == 400 and "number of texts" in detail)

    def _is_quota(self, error: HttpStatusError) -> bool:
        detail = error.detail.lower()
        return error.status == 402 or (error.status == 429 and "trial key" in detail and "month" in detail)


PROVIDER = ProviderSpec(
    name="cohere",
    factory=vendor_factory(CohereProvider),
    summary="Cohere's embed-v4.0 (also embed-english-v3.0) over its v2 API; paid per token",
    order=32,
    price=COHERE.price,
    read_options=functools.partial(read_vendor_options, COHERE),
    variables=("COHERE_API_KEY", "SIGNAL_HUB_COHERE_MODEL", "SIGNAL_HUB_COHERE_DIMENSIONS"),
)
