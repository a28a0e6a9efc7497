"""`voyage`: Voyage AI's embedding models (voyage-code-3 by default) over its HTTP API.

```bash
VOYAGE_API_KEY=pa-...  SIGNAL_HUB_PROVIDER=voyage  signal-hub-embeddings
```

`POST {base}/embeddings` with `{"input", "model", "input_type": "query" | "document",
"output_dimension"}` and a bearer key; the answer is OpenAI-shaped (`data[].embedding`,
`data[].index`) with `usage.total_tokens`. A request holds at most 1,000 texts and 120K tokens
for voyage-code-3 and voyage-3-large (320K for voyage-3.5, 1M for voyage-3.5-lite); a text at
most 32K tokens. Voyage sends no rate-limit headers and no retry hint with its 429, so requests
are paced to its documented first tier (2,000 RPM, 3M TPM for voyage-code-3; set
`SIGNAL_HUB_VOYAGE_RPM`/`_TPM` for a higher tier) and a 429 is retried with backoff. A 400 about
the batch ("max allowed tokens per submitted batch", "batch size") halves the request.

Plain HTTP through the shared engine rather than the `voyageai` SDK: the SDK is synchronous at
heart (its async client is another HTTP stack, aiohttp), retries on its own and hides the
response headers and error bodies the engine needs; the API is one JSON POST.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from providers.registry import ProviderSpec
from providers.remote.batching import RequestLimits
from providers.remote.http_json import HttpStatusError
from providers.remote.vendor import VendorProvider, indexed, vendor_factory
from providers.remote.vendor_spec import Model, Vendor, read_vendor_options

if TYPE_CHECKING:
    from providers.base import InputType

__all__ = ["VOYAGE", "VoyageProvider"]


def _model(price: float, request_tokens: int) -> Model:
    limits = RequestLimits(max_inputs=1000, max_input_tokens=32_000, max_request_tokens=request_tokens)
    return Model(dimensions=1024, lengths=(256, 512, 2048), price=price, limits=limits)


VOYAGE = Vendor(
    name="voyage",
    label="Voyage AI",
    key_variable="VOYAGE_API_KEY",
    base_url="https://api.voyageai.com/v1",
    default_model="voyage-code-3",
    models={
        "voyage-code-3": _model(0.18, 120_000),
        "voyage-3-large": _model(0.18, 120_000),
        "voyage-3.5": _model(0.06, 320_000),
        "voyage-3.5-lite": _model(0.02, 1_000_000),
    },
    rpm=2000,
    tpm=3_000_000,
)


class VoyageProvider(VendorProvider):
    """Voyage AI's `/v1/embeddings`."""

    name = "voyage"
    vendor = VOYAGE

    def _payload(self, texts: list[str], input_type: InputType) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"input": texts, "model": self.model, "input_type": input_type}
        if self._dimensions_param is not None:
            body["output_dimension"] = self._dimensions_param
        return "embeddings", body

    def _read(self, body: Any, count: int) -> tuple[list[Any], int | None]:
        return indexed(body["data"]), (body.get("usage") or {}).get("total_tokens")

    def _too_large(self, error: HttpStatusError) -> bool:
        detail = error.detail.lower()
        return error.status == 413 or (error.status == 400 and ("submitted batch" in detail or "batch size" in detail))


PROVIDER = ProviderSpec(
    name="voyage",
    factory=vendor_factory(VoyageProvider),
    summary="Voyage AI's voyage-code-3 (also voyage-3.5, -3.5-lite, -3-large) over its API; paid per token",
    order=30,
    price=VOYAGE.price,
    read_options=functools.partial(read_vendor_options, VOYAGE),
    variables=("VOYAGE_API_KEY", "SIGNAL_HUB_VOYAGE_MODEL", "SIGNAL_HUB_VOYAGE_DIMENSIONS"),
)
