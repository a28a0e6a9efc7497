"""A loopback HTTP server behaving like the OpenAI-compatible routes of TEI and Ollama, for tests.

    with LoopbackCompatible("tei", dimensions=8) as server:     # POST {server.base_url}/embeddings

Flavours, as the real servers answer:

- ``"tei"`` (text-embeddings-inference): a body over ``payload_limit`` bytes gets a plain-text
  413; more than ``max_batch`` inputs get a 422 "batch size ... > maximum allowed batch size";
  a ``dimensions`` field gets a 422 (no Matryoshka support); ``usage`` is reported.
- ``"ollama"``: no ``usage`` in the answer; vectors are always floats.

Vectors are deterministic (``vector_for(text, dimensions, seed)``) and deliberately not unit
length. ``seed`` tells two servers apart. ``inject("429")`` / ``inject("503")`` queue one error
each (with ``retry-after: 1``). Counters: ``requests`` (inputs and status of each request) and
``tokens_served`` (one token per whitespace-separated word).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import numpy as np

Flavour = Literal["tei", "ollama"]


def vector_for(text: str, dimensions: int, seed: int = 0) -> np.ndarray:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return (rng.standard_normal(dimensions) * 3.0).astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def words(text: str) -> int:
    return max(1, len(text.split()))


@dataclass
class Seen:
    inputs: int
    status: int


class LoopbackCompatible:
    def __init__(
        self,
        flavour: Flavour,
        *,
        dimensions: int = 8,
        seed: int = 0,
        payload_limit: int = 2_000_000,
        max_batch: int = 32,
        api_key: str | None = None,
    ) -> None:
        self.flavour = flavour
        self.dimensions = dimensions
        self.seed = seed
        self.payload_limit = payload_limit
        self.max_batch = max_batch
        self.api_key = api_key
        self.requests: list[Seen] = []
        self.tokens_served = 0
        self._faults: list[int] = []
        self._inputs = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    @property
    def statuses(self) -> list[int]:
        return [seen.status for seen in self.requests]

    def inject(self, status: Literal["429", "503"]) -> None:
        self._faults.append(int(status))

    def __enter__(self) -> LoopbackCompatible:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, raw: bytes, authorization: str | None) -> tuple[int, str, bytes, dict[str, str]]:
        """Status, content type, body and extra headers for one POST /v1/embeddings."""
        with self._lock:
            self._inputs = 0
            status, kind, body, headers = self._answer(raw, authorization)
            self.requests.append(Seen(self._inputs, status))
            return status, kind, body, headers

    def _answer(self, raw: bytes, authorization: str | None) -> tuple[int, str, bytes, dict[str, str]]:
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return _json(401, {"error": "Unauthorized", "error_type": "Unauthorized"})
        if len(raw) > self.payload_limit:
            message = b"Failed to buffer the request body: length limit exceeded"
            return 413, "text/plain", message, {}
        request: dict[str, Any] = json.loads(raw)
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        self._inputs = len(inputs)
        if self._faults:
            status = self._faults.pop(0)
            return _json(status, {"error": "overloaded", "error_type": "Overloaded"}, {"retry-after": "1"})
        if self.flavour == "tei" and "dimensions" in request:
            return _json(422, {"error": "`dimensions` is not supported", "error_type": "Validation"})
        if self.flavour == "tei" and len(inputs) > self.max_batch:
            message = f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch}"
            return _json(422, {"error": message, "error_type": "Validation"})
        tokens = sum(words(text) for text in inputs)
        self.tokens_served += tokens
        as_base64 = self.flavour == "tei" and request.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = vector_for(text, self.dimensions, self.seed)
            embedding: object = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode() if as_base64 else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        body: dict[str, Any] = {"object": "list", "data": data, "model": request.get("model", "")}
        if self.flavour == "tei":
            body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json(200, body)


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "application/json", json.dumps(body).encode(), headers or {}


def _handler(app: LoopbackCompatible) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path.rstrip("/") != "/v1/embeddings":
                status, kind, body, headers = _json(404, {"error": "Not Found"})
            else:
                status, kind, body, headers = app.answer(raw, self.headers.get("authorization"))
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
