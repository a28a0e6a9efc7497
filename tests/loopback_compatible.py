"""A loopback HTTP server behaving like the OpenAI-compatible routes of TEI and Ollama, for tests.

    with LoopbackCompatible("tei", dimensions=8) as server:     # POST {server.base_url}/embeddings

Flavours, as the real servers answer:

- ``"tei"`` (text-embeddings-inference): a body over ``payload_limit`` bytes gets a plain-text
  413; more than ``max_batch`` inputs get a 422 "batch size ... > maximum allowed batch size";
  a ``dimensions`` field gets a 422 (no Matryoshka support); ``usage`` is reported.
- ``"ollama"``: no ``usage`` in the answer; vectors are always floats.
- ``"infinity"``: ``usage`` counts characters, not tokens; the answer's ``model`` is the one it
  serves (``served_model``) whatever the request names; ``GET {prefix}/models`` lists it.

``max_input_length`` set: a TEI server answers it at ``GET /info``, an infinity one in its
``/models`` entry. ``prefix`` is the path the routes live under (``"/v1"``, or ``""`` as infinity).

Vectors are deterministic (``vector_for(text, dimensions, seed)``) and deliberately not unit
length. ``seed`` tells two servers apart. ``inject("429")`` / ``inject("503")`` queue one error
each (with ``retry-after: 1``); ``inject("html")`` a 200 with an HTML page, ``inject("badjson")`` a
200 whose body claims JSON and is HTML, ``inject("hang")`` an answer that never comes (until the
server closes). Counters: ``requests`` (inputs and status of each request) and
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

Flavour = Literal["tei", "ollama", "infinity"]
Fault = Literal["429", "503", "html", "badjson", "hang"]
_PAGE = b"<!doctype html><html><body><h1>Sign in</h1></body></html>"


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
        prefix: str = "/v1",
        max_input_length: int | None = None,
        served_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    ) -> None:
        self.flavour = flavour
        self.dimensions = dimensions
        self.seed = seed
        self.payload_limit = payload_limit
        self.max_batch = max_batch
        self.api_key = api_key
        self.prefix = prefix
        self.max_input_length = max_input_length
        self.served_model = served_model
        self.closing = threading.Event()
        self.requests: list[Seen] = []
        self.tokens_served = 0
        self._faults: list[str] = []
        self._inputs = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}{self.prefix}"

    @property
    def statuses(self) -> list[int]:
        return [seen.status for seen in self.requests]

    def inject(self, fault: Fault) -> None:
        self._faults.append(fault)

    def __enter__(self) -> LoopbackCompatible:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()  # hung answers end
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
            fault = self._faults.pop(0)
            if fault == "html":
                return 200, "text/html", _PAGE, {}
            if fault == "badjson":
                return 200, "application/json", _PAGE, {}
            if fault == "hang":
                return 0, "", b"", {}  # the handler waits for the server to close
            return _json(int(fault), {"error": "overloaded", "error_type": "Overloaded"}, {"retry-after": "1"})
        if self.flavour == "tei" and "dimensions" in request:
            return _json(422, {"error": "`dimensions` is not supported", "error_type": "Validation"})
        if self.flavour == "tei" and len(inputs) > self.max_batch:
            message = f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch}"
            return _json(422, {"error": message, "error_type": "Validation"})
        tokens = sum(words(text) for text in inputs)
        self.tokens_served += tokens
        if self.flavour == "infinity":
            tokens = sum(len(text) for text in inputs)  # characters, reported as tokens
        as_base64 = self.flavour == "tei" and request.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = vector_for(text, self.dimensions, self.seed)
            embedding: object = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode() if as_base64 else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        model = self.served_model if self.flavour == "infinity" else request.get("model", "")
        body: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if self.flavour in ("tei", "infinity"):
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
            if self.path.rstrip("/") != f"{app.prefix}/embeddings":
                status, kind, body, headers = _json(404, {"error": "Not Found"})
            else:
                status, kind, body, headers = app.answer(raw, self.headers.get("authorization"))
            if status == 0:
                app.closing.wait(60)  # hung: no answer until the server closes
                return
            self._send(status, kind, body, headers)

        def do_GET(self) -> None:
            limit = app.max_input_length
            if app.flavour == "tei" and self.path == "/info" and limit is not None:
                answer = _json(200, {"model_id": app.served_model, "max_input_length": limit})
            elif app.flavour == "infinity" and self.path == f"{app.prefix}/models":
                entry = {"id": app.served_model, "object": "model", "stats": {}, "max_input_length": limit}
                answer = _json(200, {"object": "list", "data": [entry]})
            else:
                answer = _json(404, {"error": "Not Found"})
            self._send(*answer)

        def _send(self, status: int, kind: str, body: bytes, headers: dict[str, str]) -> None:
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
