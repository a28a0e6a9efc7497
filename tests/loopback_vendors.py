"""A loopback HTTP server speaking the embedding APIs of Voyage, Gemini, Cohere or Mistral, for tests.

    with LoopbackVendor("voyage") as server:   # server.base_url is what SIGNAL_HUB_VOYAGE_BASE_URL takes
        ...
    server.seen[-1].body                        # the JSON body of the last request, as received

Each flavour answers as its vendor documents it:

- voyage: POST /v1/embeddings, `Authorization: Bearer`, `input_type` query/document; at most
  1,000 texts and 120,000 tokens; `usage.total_tokens`.
- gemini: POST /v1beta/models/{m}:batchEmbedContents, `x-goog-api-key`, `taskType` per request;
  at most 100 requests; no usage.
- cohere: POST /v2/embed, `Authorization: Bearer`, `input_type` search_query/search_document
  (required); at most 96 texts; `meta.billed_units.input_tokens`.
- mistral: POST /v1/embeddings, `Authorization: Bearer`, no input-type field (an unknown field is
  a 422); at most 512 texts and 16,384 tokens; `usage.prompt_tokens` and rate-limit headers.

Over a limit, each answers with its own 400 and message. A wrong key gets the vendor's refusal
(Gemini: 400 with `ErrorInfo.reason` `API_KEY_INVALID`). `inject("429")` queues a rate limit in
the vendor's shape: Gemini's carries `RetryInfo.retryDelay` "7s", Mistral's its rate-limit
headers, Voyage's and Cohere's no hint (as theirs). `inject("quota")`, `inject("500")` likewise;
`inject("garbage")`, `inject("not json")` and `inject("bad gzip")` answer 200 without vectors.
Vectors are deterministic in (text, input-type word) and not unit length; one token per word.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import numpy as np

Flavour = Literal["voyage", "gemini", "cohere", "mistral"]
FLAVOURS: tuple[Flavour, ...] = ("voyage", "gemini", "cohere", "mistral")
SMALLEST: dict[Flavour, int] = {"voyage": 256, "gemini": 128, "cohere": 256, "mistral": 8}
"""The shortest vectors each vendor's default model makes: what the tests ask for."""
KEY = "test-key-0123"
LIMITS: dict[Flavour, tuple[int, int | None]] = {
    "voyage": (1000, 120_000),
    "gemini": (100, None),
    "cohere": (96, None),
    "mistral": (512, 16_384),
}
MISTRAL_LIMIT_TOKENS = 500_000
_GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):batchEmbedContents$")
_Answer = tuple[int, dict[str, Any], dict[str, str]]


def vector_for(text: str, word: str | None, dimensions: int) -> np.ndarray:
    digest = hashlib.sha256(f"{word}:{text}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return (rng.standard_normal(dimensions) * 3.0).astype(np.float32)


def words(text: str) -> int:
    return max(1, len(text.split()))


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    status: int


class LoopbackVendor:
    def __init__(
        self, flavour: Flavour, *, dimensions: int = 8, max_inputs: int | None = None, max_tokens: int | None = None
    ) -> None:
        self.flavour = flavour
        self.dimensions = dimensions
        documented_inputs, documented_tokens = LIMITS[flavour]
        self.max_inputs = max_inputs or documented_inputs
        self.max_tokens = max_tokens or documented_tokens
        self.seen: list[Seen] = []
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        root = f"http://127.0.0.1:{self._http.server_address[1]}"
        return root + {"voyage": "/v1", "gemini": "/v1beta", "cohere": "/v2", "mistral": "/v1"}[self.flavour]

    @property
    def statuses(self) -> list[int]:
        return [seen.status for seen in self.seen]

    def inject(self, kind: Literal["429", "quota", "500", "garbage", "not json", "bad gzip", "huge"]) -> None:
        self._faults.append(kind)

    def __enter__(self) -> LoopbackVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> _Answer:
        with self._lock:
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            status, answer, extra = self._answer(path, headers, body)
            self.seen.append(Seen(path, headers, body, status))
            return status, answer, extra

    def _answer(self, path: str, headers: dict[str, str], body: Any) -> _Answer:
        if self._faults and self._faults[0] == "huge":  # far more than any answer to the request can hold
            self._faults.pop(0)
            return 200, {"padding": "x" * 3_000_000}, {}
        if self._faults and self._faults[0] == "bad gzip":  # says gzip, is not: the client cannot decode it
            self._faults.pop(0)
            return 200, {"data": []}, {"content-encoding": "gzip"}
        if self._faults and self._faults[0] in ("garbage", "not json"):  # a 200 without vectors
            fault = self._faults.pop(0)
            return 200, ({"unexpected": []} if fault == "garbage" else "<html>502 Bad Gateway</html>"), {}  # type: ignore[return-value]
        route = getattr(self, f"_{self.flavour}")
        return route(path, headers, body)  # type: ignore[no-any-return]

    def _fault(self) -> str | None:
        return self._faults.pop(0) if self._faults else None

    # Voyage AI

    def _voyage(self, path: str, headers: dict[str, str], body: Any) -> _Answer:
        if path != "/v1/embeddings":
            return 404, {"detail": "Not Found"}, {}
        if headers.get("authorization") != f"Bearer {KEY}":
            return 401, {"detail": "Provided API key is invalid."}, {}
        if fault := self._fault():
            if fault == "429":
                return 429, {"detail": "You have exceeded your rate limit. Please pace your requests."}, {}
            if fault == "quota":
                return 402, {"detail": "You have not yet added your payment method in the billing page."}, {}
            return 500, {"detail": "Internal Server Error"}, {}
        texts, word = body["input"], body.get("input_type")
        if word not in (None, "query", "document"):
            message = (
                "The request body is not valid JSON, or some arguments were not specified properly. In particular, "
                f"Value '{word}' supplied for argument 'input_type' is not valid -- "
                "accepted values are 'query' or 'document'"
            )
            return 400, {"detail": message}, {}
        if len(texts) > self.max_inputs:
            return 400, {"detail": f"The batch size limit is {self.max_inputs}. Your batch size is {len(texts)}."}, {}
        tokens = sum(words(text) for text in texts)
        if self.max_tokens is not None and tokens > self.max_tokens:
            message = (
                f"Request to model '{body['model']}' failed. The max allowed tokens per submitted batch is "
                f"{self.max_tokens}. Your batch has {tokens} tokens after truncation."
            )
            return 400, {"detail": message}, {}
        length = body.get("output_dimension") or self.dimensions
        data = [
            {"object": "embedding", "embedding": vector_for(t, word, length).tolist(), "index": i}
            for i, t in enumerate(texts)
        ]
        return 200, {"object": "list", "data": data, "model": body["model"], "usage": {"total_tokens": tokens}}, {}

    # Gemini API

    def _gemini(self, path: str, headers: dict[str, str], body: Any) -> _Answer:
        match = _GEMINI_PATH.match(path)
        if match is None:
            return 404, _google(404, "NOT_FOUND", f"Method not found: {path}"), {}
        if headers.get("x-goog-api-key") != KEY:
            info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            return 400, _google(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", info), {}
        if fault := self._fault():
            if fault == "429":
                retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
                return 429, _google(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", retry), {}
            if fault == "quota":
                failure = {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "EmbedContentRequestsPerDayPerProjectPerModel-FreeTier"}],
                }
                return 429, _google(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", failure), {}
            return 500, _google(500, "INTERNAL", "An internal error has occurred."), {}
        requests = body["requests"]
        if len(requests) > self.max_inputs:
            message = f"* BatchEmbedContentsRequest.requests: at most {self.max_inputs} requests can be in one batch"
            return 400, _google(400, "INVALID_ARGUMENT", message), {}
        embeddings = []
        for request in requests:
            if request.get("model") != f"models/{match.group(1)}":
                return 400, _google(400, "INVALID_ARGUMENT", "requests[].model must match the URL's model"), {}
            task = request.get("taskType")
            if task not in (None, "RETRIEVAL_DOCUMENT", "RETRIEVAL_QUERY", "CODE_RETRIEVAL_QUERY"):
                return 400, _google(400, "INVALID_ARGUMENT", f"Invalid value at 'taskType' ({task})"), {}
            text = "".join(part["text"] for part in request["content"]["parts"])
            length = request.get("outputDimensionality") or self.dimensions
            embeddings.append({"values": vector_for(text, task, length).tolist()})
        return 200, {"embeddings": embeddings}, {}

    # Cohere

    def _cohere(self, path: str, headers: dict[str, str], body: Any) -> _Answer:
        if path != "/v2/embed":
            return 404, {"message": f"Not Found: {path}"}, {}
        if headers.get("authorization") != f"Bearer {KEY}":
            return 401, {"id": "e1", "message": "invalid api token"}, {}
        if fault := self._fault():
            if fault == "429":
                return 429, {"id": "e2", "message": "You are sending too many requests: please slow down."}, {}
            if fault == "quota":
                message = "You are using a Trial key, which is limited to 1000 API calls / month."
                return 429, {"id": "e3", "message": message}, {}
            return 500, {"id": "e4", "message": "internal server error"}, {}
        texts, word = body["texts"], body.get("input_type")
        if word not in ("search_query", "search_document", "classification", "clustering"):
            return 400, {"id": "e5", "message": "invalid request: input_type is required for embed-v4.0"}, {}
        if len(texts) > self.max_inputs:
            message = (
                f"invalid request: total number of texts must be at most {self.max_inputs} - received {len(texts)}"
            )
            return 400, {"id": "e6", "message": message}, {}
        if body.get("embedding_types") != ["float"]:
            return 400, {"id": "e7", "message": "this loopback answers embedding_types ['float'] only"}, {}
        length = body.get("output_dimension") or self.dimensions
        tokens = sum(words(text) for text in texts)
        answer = {
            "id": "a1",
            "embeddings": {"float": [vector_for(t, word, length).tolist() for t in texts]},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
            "response_type": "embeddings_by_type",
        }
        return 200, answer, {}

    # Mistral

    def _mistral(self, path: str, headers: dict[str, str], body: Any) -> _Answer:
        if path != "/v1/embeddings":
            return 404, {"detail": "Not Found"}, {}
        if headers.get("authorization") != f"Bearer {KEY}":
            return 401, {"message": "Unauthorized", "request_id": "r1"}, {}
        limits = {
            "x-ratelimit-limit-tokens-minute": str(MISTRAL_LIMIT_TOKENS),
            "x-ratelimit-remaining-tokens-minute": str(MISTRAL_LIMIT_TOKENS - 1000),
            "x-ratelimit-limit-req-minute": "720",
            "x-ratelimit-remaining-req-minute": "700",
        }
        if fault := self._fault():
            if fault == "429":
                return (
                    429,
                    {"message": "Requests rate limit exceeded"},
                    {**limits, "x-ratelimit-remaining-req-minute": "0"},
                )
            if fault == "quota":
                return 402, {"message": "Payment required: no active subscription"}, {}
            return 500, {"object": "error", "message": "Internal server error", "type": "internal_error"}, {}
        unknown = set(body) - {"model", "input", "output_dimension", "output_dtype", "encoding_format"}
        if unknown:
            detail = [
                {"type": "extra_forbidden", "loc": ["body", name], "msg": "Extra inputs are not permitted"}
                for name in sorted(unknown)
            ]
            return 422, {"object": "error", "message": {"detail": detail}, "type": "invalid_request_error"}, {}
        texts = body["input"]
        if len(texts) > self.max_inputs:
            return 400, _mistral_error("Too many inputs in request, split into more batches."), {}
        tokens = sum(words(text) for text in texts)
        if self.max_tokens is not None and tokens > self.max_tokens:
            return 400, _mistral_error("Too many tokens overall, split into more batches."), {}
        length = body.get("output_dimension") or self.dimensions
        data = [
            {"object": "embedding", "embedding": vector_for(t, None, length).tolist(), "index": i}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        return 200, {"id": "m1", "object": "list", "data": data, "model": body["model"], "usage": usage}, limits


def _google(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


def _mistral_error(message: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": "invalid_request_prompt", "param": None, "code": "3210"}


def _handler(app: LoopbackVendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, body, extra = app.answer(self.path, headers, raw)
            encoded = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(encoded)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
