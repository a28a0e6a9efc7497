"""`gemini`: Google's gemini-embedding-001 over the Gemini API (Google AI Studio keys).

```bash
GEMINI_API_KEY=...  SIGNAL_HUB_PROVIDER=gemini  signal-hub-embeddings
```

`POST {base}/models/{model}:batchEmbedContents` with an `x-goog-api-key` header and
`{"requests": [{"model", "content": {"parts": [{"text"}]}, "taskType", "outputDimensionality"}]}`;
the answer is `{"embeddings": [{"values"}]}` in request order. The task type is
`RETRIEVAL_DOCUMENT` for documents and `CODE_RETRIEVAL_QUERY` for queries (a query that looks
for code). A request holds at most 100 texts of 2,048 tokens each. The answer reports no usage,
so its tokens are our own count, marked `tokens_estimated`.

A 429 (`RESOURCE_EXHAUSTED`) carries its wait in the body (`google.rpc.RetryInfo.retryDelay`,
e.g. "37s"): every request pauses that long. One whose `QuotaFailure` names a per-day quota will
not clear in minutes and is a quota error (the fallback answers). A bad key is a 400 whose
`ErrorInfo.reason` is `API_KEY_INVALID`.

Plain HTTP through the shared engine rather than the `google-genai` SDK: that SDK brings
google-auth and its own retry and HTTP layers for what is one JSON POST here, and its answers
hide the headers and error details the engine reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from providers.registry import ProviderSpec
from providers.remote.batching import RequestLimits
from providers.remote.http_json import HttpStatusError
from providers.remote.ratelimit import parse_duration
from providers.remote.vendor import VendorProvider, vendor_factory
from providers.remote.vendor_spec import Model, Vendor, read_vendor_options

if TYPE_CHECKING:
    from providers.base import InputType

__all__ = ["GEMINI", "TASK_TYPES", "GeminiProvider"]

TASK_TYPES: Mapping[InputType, str] = {"document": "RETRIEVAL_DOCUMENT", "query": "CODE_RETRIEVAL_QUERY"}
"""Our input types as the Gemini API's `taskType`."""

GEMINI = Vendor(
    name="gemini",
    label="Gemini",
    key_variable="GEMINI_API_KEY",
    base_url="https://generativelanguage.googleapis.com/v1beta",
    default_model="gemini-embedding-001",
    models={
        "gemini-embedding-001": Model(
            dimensions=3072,
            lengths=range(128, 3072),
            price=0.15,
            limits=RequestLimits(max_inputs=100, max_input_tokens=2048, max_request_tokens=100 * 2048),
        ),
    },
)


class GeminiProvider(VendorProvider):
    """The Gemini API's `batchEmbedContents`."""

    name = "gemini"
    vendor = GEMINI

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def _payload(self, texts: list[str], input_type: InputType) -> tuple[str, dict[str, Any]]:
        common: dict[str, Any] = {"model": f"models/{self.model}", "taskType": TASK_TYPES[input_type]}
        if self._dimensions_param is not None:
            common["outputDimensionality"] = self._dimensions_param
        requests = [{**common, "content": {"parts": [{"text": text}]}} for text in texts]
        return f"models/{self.model}:batchEmbedContents", {"requests": requests}

    def _read(self, body: Any, count: int) -> tuple[list[Any], int | None]:
        return [item["values"] for item in body["embeddings"]], None  # no usage in the answer

    def _too_large(self, error: HttpStatusError) -> bool:
        detail = error.detail.lower()
        return error.status == 413 or (error.status == 400 and "requests can be in one batch" in detail)

    def _retry_after(self, error: HttpStatusError) -> float | None:
        for item in _details(error):
            if str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
                return parse_duration(str(item.get("retryDelay", "")))
        return None

    def _is_quota(self, error: HttpStatusError) -> bool:
        if error.status == 402:
            return True
        for item in _details(error):
            if str(item.get("@type", "")).endswith("google.rpc.QuotaFailure"):
                violations = item.get("violations") or []
                if any("perday" in str(v.get("quotaId", "")).lower() for v in violations if isinstance(v, Mapping)):
                    return True
        return False

    def _is_auth(self, error: HttpStatusError) -> bool:
        reasons = {str(item.get("reason", "")) for item in _details(error)}
        return error.status in (401, 403) or "API_KEY_INVALID" in reasons


def _details(error: HttpStatusError) -> list[Mapping[str, Any]]:
    """`error.details` of a google.rpc.Status body (RetryInfo, QuotaFailure, ErrorInfo)."""
    body = error.body
    inner = body.get("error") if isinstance(body, Mapping) else None
    details = inner.get("details") if isinstance(inner, Mapping) else None
    return [item for item in details if isinstance(item, Mapping)] if isinstance(details, list) else []


PROVIDER = ProviderSpec(
    name="gemini",
    factory=vendor_factory(GeminiProvider),
    summary="Google's gemini-embedding-001 over the Gemini API; paid per token (usage is our estimate)",
    order=31,
    price=GEMINI.price,
    read_options=functools.partial(read_vendor_options, GEMINI),
    variables=("GEMINI_API_KEY", "SIGNAL_HUB_GEMINI_DIMENSIONS"),
)
