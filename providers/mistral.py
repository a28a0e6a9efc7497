"""`mistral`: Mistral's codestral-embed (and mistral-embed) over its HTTP API.

```bash
MISTRAL_API_KEY=...  SIGNAL_HUB_PROVIDER=mistral  signal-hub-embeddings
```

`POST {base}/embeddings` with a bearer key and `{"model", "input", "output_dimension",
"output_dtype": "float"}`; the answer is OpenAI-shaped (`data[].embedding`, `data[].index`,
`usage.prompt_tokens`). Mistral's embeddings API takes no query/document word, so `input_type`
is ignored and `list_providers` says `input_types: false`. A request holds at most 512 texts
and 16,384 tokens; a text at most 8,192. "Too many tokens overall, split into more batches"
(a 400) halves the request. Its rate-limit headers (`x-ratelimit-{limit,remaining}-tokens-minute`,
`-req-minute`) are read by the shared pacer under OpenAI's names.

Plain HTTP through the shared engine rather than the `mistralai` SDK: the answer is one
OpenAI-shaped JSON document, and the SDK's generated client hides the rate-limit headers
the pacer learns the limits from.
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

__all__ = ["MISTRAL", "MistralProvider"]

_LIMITS = RequestLimits(max_inputs=512, max_input_tokens=8192, max_request_tokens=16_384)

MISTRAL = Vendor(
    name="mistral",
    label="Mistral",
    key_variable="MISTRAL_API_KEY",
    base_url="https://api.mistral.ai/v1",
    default_model="codestral-embed",
    models={
        "codestral-embed": Model(dimensions=1536, lengths=range(1, 3073), price=0.15, limits=_LIMITS),
        "mistral-embed": Model(dimensions=1024, price=0.10, limits=_LIMITS),
    },
    rate_headers={
        "x-ratelimit-limit-tokens-minute": "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens-minute": "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-req-minute": "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-req-minute": "x-ratelimit-remaining-requests",
    },
)


class MistralProvider(VendorProvider):
    """Mistral's `/v1/embeddings`."""

    name = "mistral"
    vendor = MISTRAL
    input_types = False  # the API has no query/document parameter

    def _payload(self, texts: list[str], input_type: InputType) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "output_dtype": "float"}
        if self._dimensions_param is not None:
            body["output_dimension"] = self._dimensions_param
        return "embeddings", body

    def _read(self, body: Any, count: int) -> tuple[list[Any], int | None]:
        return indexed(body["data"]), (body.get("usage") or {}).get("prompt_tokens")

    def _too_large(self, error: HttpStatusError) -> bool:
        detail = error.detail.lower()
        return error.status == 413 or (
            error.status == 400 and ("split into more batches" in detail or "too many tokens in batch" in detail)
        )


PROVIDER = ProviderSpec(
    name="mistral",
    factory=vendor_factory(MistralProvider),
    summary="Mistral's codestral-embed (also mistral-embed) over its API; no input types; paid per token",
    order=33,
    price=MISTRAL.price,
    read_options=functools.partial(read_vendor_options, MISTRAL),
    variables=("MISTRAL_API_KEY", "SIGNAL_HUB_MISTRAL_MODEL", "SIGNAL_HUB_MISTRAL_DIMENSIONS"),
)
