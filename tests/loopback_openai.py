"""A loopback HTTP server speaking the OpenAI embeddings API, for tests and benchmarks.

``POST /v1/embeddings`` answers like the real API closely enough for the official ``openai``
SDK to work unmodified: bearer auth, the three models, ``float``/``base64`` encodings,
``dimensions``, ``usage``, the API's 400/401/404/429 error bodies and its rate-limit headers.

    with LoopbackOpenAI(api_key="sk-test", rpm=3000, tpm=1_000_000, time_scale=60) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)

Standalone (prints the base URL to stderr, runs until SIGINT/SIGTERM)::

    python -m tests.loopback_openai --port 8000 --rpm 3000 --tpm 1000000 --time-scale 60

Vectors are deterministic: ``embedding_for(item, model, dimensions)`` returns exactly what the
server sends for a text or token array. Usage comes from ``count_tokens`` (each word piece of
up to 4 characters and each punctuation mark is one token), deliberately unlike a
``len(text) / 4`` estimate; ``tiktoken_counter()`` offers cl100k_base instead when its file is
already in tiktoken's cache (it never downloads).

Clock compression: rate limits are token buckets refilling ``limit`` per virtual minute, and
virtual time runs ``time_scale`` times faster than real time (``time_scale=60``: a minute lasts
one real second). Every duration the server reports (``x-ratelimit-reset-*``, ``retry-after-ms``,
``retry-after`` and "Please try again in ..." messages) is in *real* seconds: how long a client
actually has to wait. An unlimited dimension advertises ``UNLIMITED`` as limit and remaining.

Faults, queued with ``server.inject(fault, times=1, retry_after_ms=None)`` and consumed one per
authenticated request in FIFO order:

- ``"429"``: a rate_limit_exceeded 429 with ``retry-after-ms`` (default 20 ms);
- ``"insufficient_quota"``: the 429 of an account without credit;
- ``"500"``, ``"503"``: server errors;
- ``"hang"``: no answer until ``release_hung()`` (then it answers normally) or ``close()`` (then
  the connection is dropped), so the client's timeout fires;
- ``"drop"``: the connection is closed without any response;
- ``"shuffle"``: a correct answer with ``data`` out of index order.

``retry_after_ms`` adds ``retry-after-ms``/``retry-after`` headers to any injected error.

Counters (thread-safe, zeroed by ``reset_counters()``): ``request_count``, ``status_counts``,
``rate_limited_count`` (every 429), ``inputs_embedded``, ``tokens_served``, ``requests`` (one
``RequestRecord`` per request: inputs, model, status, fault) and ``embedded_inputs()``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, get_args

import numpy as np

__all__ = [
    "FAULTS",
    "MODEL_DIMENSIONS",
    "UNLIMITED",
    "Fault",
    "LoopbackOpenAI",
    "RequestRecord",
    "count_tokens",
    "embedding_for",
    "format_duration",
    "tiktoken_counter",
]

MODEL_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_FIXED_DIMENSION_MODELS = frozenset({"text-embedding-ada-002"})

Fault = Literal["429", "insufficient_quota", "500", "503", "hang", "drop", "shuffle"]
FAULTS: frozenset[str] = frozenset(get_args(Fault))

UNLIMITED = 1_000_000_000
ORGANIZATION = "org-loopback"
_DEFAULT_INJECTED_RETRY_AFTER_MS = 20.0

TokenInput = str | list[int]

_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
_RATE_LIMITS_URL = "https://platform.openai.com/account/rate-limits"
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

_WORD_PIECES = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The loopback tokenizer: each word costs ceil(len / 4) tokens, each punctuation mark 1."""
    return max(1, sum((len(piece) + 3) // 4 for piece in _WORD_PIECES.findall(text)))


def tiktoken_counter() -> Callable[[str], int] | None:
    """A cl100k_base counter if tiktoken has the file cached and intact, else None (no download)."""
    default_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR", default_dir))
    if not cache_dir:
        return None
    path = os.path.join(cache_dir, hashlib.sha1(_CL100K_URL.encode()).hexdigest())
    try:
        with open(path, "rb") as file:
            # tiktoken re-downloads a cached file whose hash is wrong; make sure it won't.
            if hashlib.sha256(file.read()).hexdigest() != _CL100K_SHA256:
                return None
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base")
    except Exception:
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def embedding_for(item: TokenInput, model: str = "text-embedding-3-small", dimensions: int | None = None) -> np.ndarray:
    """The unit-norm float32 vector the server returns for a text or token array.

    Like the v3 models, a shortened vector is the renormalised prefix of the full one.
    """
    native = MODEL_DIMENSIONS[model]
    key = f"{model}\0text\0{item}" if isinstance(item, str) else f"{model}\0tokens\0{item}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    vector = rng.standard_normal(native, dtype=np.float32)[: dimensions or native]
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def format_duration(seconds: float) -> str:
    """A duration as the API's headers write it (Go style): 12ms, 1s, 2m3.5s, 6m0s, 1h0m0s."""
    if seconds <= 0:
        return "0s"
    ms = max(1, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") or "0"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _mask_key(key: str) -> str:
    if len(key) <= 9:
        return "*" * len(key)
    return f"{key[:5]}{'*' * (len(key) - 9)}{key[-4:]}"


def _is_token_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(type(token) is int and token >= 0 for token in value)


def _parse_inputs(raw: object) -> list[TokenInput] | None:
    """The inputs of a request body's ``input``, or None if the API would reject its shape."""
    if isinstance(raw, str):
        return [raw] if raw else None
    if not isinstance(raw, list) or not raw:
        return None
    if all(isinstance(item, str) and item for item in raw):
        return list(raw)
    if _is_token_array(raw):
        return [list(raw)]
    if all(_is_token_array(item) for item in raw):
        return [list(item) for item in raw]
    return None


@dataclass
class RequestRecord:
    """One request the server received; ``status`` None means it got no answer (drop/hang)."""

    inputs: list[TokenInput] = field(default_factory=list)
    model: str | None = None
    status: int | None = None
    fault: str | None = None


@dataclass
class _Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Job:
    model: str
    inputs: list[TokenInput]
    dimensions: int | None
    encoding_format: str
    token_counts: list[int]


@dataclass
class _PendingFault:
    fault: str
    retry_after_ms: float | None


def _error(
    status: int,
    message: str,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> _Reply:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return _Reply(status, body, headers or {})


def _retry_headers(seconds: float) -> dict[str, str]:
    return {
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
        "retry-after": str(max(1, math.ceil(seconds))),
    }


class _Bucket:
    """A token bucket holding up to ``limit`` units, refilled at ``limit`` per virtual minute."""

    def __init__(self, limit: int | None, now: float) -> None:
        self.limit = limit
        self.level = float(limit or 0)
        self.stamp = now

    def refill(self, now: float) -> None:
        if self.limit is not None:
            self.level = min(self.limit, self.level + (now - self.stamp) * self.limit / 60)
        self.stamp = now

    def wait_for(self, amount: int) -> float:
        """Virtual seconds until ``amount`` units are available (0 if they are now)."""
        if self.limit is None or self.level >= amount:
            return 0.0
        return (amount - self.level) * 60 / self.limit

    def take(self, amount: int) -> None:
        if self.limit is not None:
            self.level -= amount

    def headers(self, kind: str, time_scale: float) -> dict[str, str]:
        if self.limit is None:
            limit = remaining = UNLIMITED
            reset = 0.0
        else:
            limit, remaining = self.limit, math.floor(self.level)
            reset = (self.limit - self.level) * 60 / self.limit / time_scale
        return {
            f"x-ratelimit-limit-{kind}": str(limit),
            f"x-ratelimit-remaining-{kind}": str(remaining),
            f"x-ratelimit-reset-{kind}": format_duration(reset),
        }


class LoopbackOpenAI:
    """The loopback embeddings server; use as a context manager or call start()/close()."""

    def __init__(
        self,
        api_key: str | None = "sk-test",
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        time_scale: float = 1.0,
        port: int = 0,
        latency: float = 0.0,
        max_inputs: int = 2048,
        max_input_tokens: int = 8192,
        max_request_tokens: int = 300_000,
        token_counter: Callable[[str], int] = count_tokens,
    ) -> None:
        """``api_key`` None accepts any key; ``latency`` delays every success by real seconds."""
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.api_key = api_key
        self.time_scale = time_scale
        self.latency = latency
        self.max_inputs = max_inputs
        self.max_input_tokens = max_input_tokens
        self.max_request_tokens = max_request_tokens
        self._port = port
        self._count_tokens = token_counter
        self._lock = threading.Condition()
        self._requests = _Bucket(rpm, self._now())
        self._tokens = _Bucket(tpm, self._now())
        self._faults: deque[_PendingFault] = deque()
        self._closing = False
        self._release_generation = 0
        self._hung = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_counters()
        from .loopback_batches import LoopbackBatches  # the Files and Batches APIs (issue 16)

        self.batches = LoopbackBatches(self)

    # lifecycle

    def start(self) -> LoopbackOpenAI:
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="loopback-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; hung requests are dropped and keep-alive connections closed."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()
        self._thread.join(timeout=1)

    def __enter__(self) -> LoopbackOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def closing(self) -> bool:
        return self._closing

    # faults

    def inject(self, fault: Fault, times: int = 1, retry_after_ms: float | None = None) -> None:
        """Queue ``fault`` for the next ``times`` requests, after any already queued."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        with self._lock:
            self._faults.extend(_PendingFault(fault, retry_after_ms) for _ in range(times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[str]:
        with self._lock:
            return [pending.fault for pending in self._faults]

    @property
    def hung_count(self) -> int:
        """How many requests are hanging right now."""
        with self._lock:
            return self._hung

    def release_hung(self) -> None:
        """Let every hanging request go on to a normal answer."""
        with self._lock:
            self._release_generation += 1
            self._lock.notify_all()

    # counters

    def reset_counters(self) -> None:
        with self._lock:
            self._request_log: list[RequestRecord] = []
            self._status_counts: Counter[int] = Counter()
            self._inputs_embedded = 0
            self._tokens_served = 0

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._request_log)

    @property
    def status_counts(self) -> dict[int, int]:
        with self._lock:
            return dict(self._status_counts)

    @property
    def rate_limited_count(self) -> int:
        with self._lock:
            return self._status_counts[429]

    @property
    def inputs_embedded(self) -> int:
        with self._lock:
            return self._inputs_embedded

    @property
    def tokens_served(self) -> int:
        with self._lock:
            return self._tokens_served

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._request_log)

    def embedded_inputs(self) -> list[TokenInput]:
        """Every input of every successful request, in arrival order."""
        with self._lock:
            return [item for record in self._request_log if record.status == 200 for item in record.inputs]

    # request handling

    def _now(self) -> float:
        return time.monotonic() * self.time_scale

    def handle(self, path: str, authorization: str | None, body: bytes) -> _Reply | None:
        """The reply to a POST, or None to close the connection without one."""
        record = RequestRecord()
        with self._lock:
            self._request_log.append(record)
            request_number = len(self._request_log)
        reply = self._process(record, request_number, path, authorization, body)
        with self._lock:
            record.status = reply.status if reply else None
            if reply:
                self._status_counts[reply.status] += 1
                reply.headers |= self._rate_limit_headers()
                reply.headers["x-request-id"] = f"req_loopback_{request_number:08d}"
        return reply

    def _process(
        self,
        record: RequestRecord,
        request_number: int,
        path: str,
        authorization: str | None,
        body: bytes,
    ) -> _Reply | None:
        if path.split("?")[0].rstrip("/") != "/v1/embeddings":
            return _error(404, f"Invalid URL (POST {path})")
        if auth_error := self._check_auth(authorization):
            return auth_error
        try:
            params = json.loads(body)
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return _error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
            )
        inputs = _parse_inputs(params.get("input"))
        record.inputs = inputs or []
        record.model = params.get("model") if isinstance(params.get("model"), str) else None

        shuffle = False
        if pending := self._next_fault():
            record.fault = pending.fault
            if pending.fault == "shuffle":
                shuffle = True
            elif pending.fault == "drop":
                return None
            elif pending.fault == "hang":
                if not self._hang():
                    return None
            else:
                return self._fault_reply(pending, record.model)

        job = self._validate(params, inputs)
        if isinstance(job, _Reply):
            return job
        if limited := self._admit(job.model, sum(job.token_counts)):
            return limited
        if self.latency > 0 and self._wait_closing(self.latency):
            return None
        return self._embed(job, shuffle, seed=request_number)

    def _check_auth(self, authorization: str | None) -> _Reply | None:
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                "You can obtain an API key from https://platform.openai.com/account/api-keys.",
            )
        if self.api_key is not None and key != self.api_key:
            return _error(
                401,
                f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _next_fault(self) -> _PendingFault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _hang(self) -> bool:
        """Block until released (True) or the server closes (False)."""
        with self._lock:
            generation = self._release_generation
            self._hung += 1
            try:
                self._lock.wait_for(lambda: self._closing or self._release_generation != generation)
            finally:
                self._hung -= 1
            return not self._closing

    def _wait_closing(self, seconds: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._closing, timeout=seconds)

    def _fault_reply(self, pending: _PendingFault, model: str | None) -> _Reply:
        retry_after_ms = pending.retry_after_ms
        if pending.fault == "429" and retry_after_ms is None:
            retry_after_ms = _DEFAULT_INJECTED_RETRY_AFTER_MS
        headers = _retry_headers(retry_after_ms / 1000) if retry_after_ms is not None else {}
        if pending.fault == "429":
            wait = format_duration(retry_after_ms / 1000) if retry_after_ms is not None else "1s"
            limit = self._requests.limit or 3000
            return _error(
                429,
                f"Rate limit reached for {model} in organization {ORGANIZATION} on requests "
                f"per min (RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in {wait}. "
                f"Visit {_RATE_LIMITS_URL} to learn more.",
                "requests",
                "rate_limit_exceeded",
                headers=headers,
            )
        if pending.fault == "insufficient_quota":
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                "insufficient_quota",
                headers=headers,
            )
        if pending.fault == "503":
            return _error(
                503, "The engine is currently overloaded, please try again later.", "server_error", headers=headers
            )
        return _error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            headers=headers,
        )

    def _validate(self, params: dict[str, Any], inputs: list[TokenInput] | None) -> _Job | _Reply:
        model = params.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter")
        if model not in MODEL_DIMENSIONS:
            return _error(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        if inputs is None or len(inputs) > self.max_inputs:
            return _error(400, _INVALID_INPUT)
        encoding_format = params.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            return _error(
                400,
                f"Invalid value for 'encoding_format': {encoding_format!r}. "
                "Supported values are: 'float' and 'base64'.",
                param="encoding_format",
            )
        dimensions = params.get("dimensions")
        if dimensions is not None:
            if model in _FIXED_DIMENSION_MODELS:
                return _error(400, "This model does not support specifying dimensions.")
            native = MODEL_DIMENSIONS[model]
            if type(dimensions) is not int or not 1 <= dimensions <= native:
                return _error(
                    400,
                    f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {native}.",
                    param="dimensions",
                )
        counts = [self._count_tokens(item) if isinstance(item, str) else len(item) for item in inputs]
        for count in counts:
            if count > self.max_input_tokens:
                return _error(
                    400,
                    f"This model's maximum context length is {self.max_input_tokens} tokens, "
                    f"however you requested {count} tokens ({count} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length.",
                )
        if (total := sum(counts)) > self.max_request_tokens:
            return _error(
                400,
                f"Requested {total} tokens, max {self.max_request_tokens} tokens per request",
                "max_tokens_per_request",
                "max_tokens_per_request",
            )
        return _Job(model, inputs, dimensions, encoding_format, counts)

    def _admit(self, model: str, tokens: int) -> _Reply | None:
        """Take one request and ``tokens`` from the buckets, or the 429 saying why not."""
        with self._lock:
            now = self._now()
            self._requests.refill(now)
            self._tokens.refill(now)
            if self._tokens.limit is not None and tokens > self._tokens.limit:
                return _error(
                    429,
                    f"Request too large for {model} in organization {ORGANIZATION} on tokens "
                    f"per min (TPM): Limit {self._tokens.limit}, Requested {tokens}. The input or "
                    f"output tokens must be reduced in order to run successfully. Visit "
                    f"{_RATE_LIMITS_URL} to learn more.",
                    "tokens",
                    "rate_limit_exceeded",
                )
            for bucket, amount, kind, unit in (
                (self._requests, 1, "requests", "requests per min (RPM)"),
                (self._tokens, tokens, "tokens", "tokens per min (TPM)"),
            ):
                if (wait := bucket.wait_for(amount) / self.time_scale) > 0:
                    assert bucket.limit is not None
                    used = math.ceil(bucket.limit - bucket.level)
                    return _error(
                        429,
                        f"Rate limit reached for {model} in organization {ORGANIZATION} on "
                        f"{unit}: Limit {bucket.limit}, Used {used}, Requested {amount}. Please try "
                        f"again in {format_duration(wait)}. Visit {_RATE_LIMITS_URL} to learn more.",
                        kind,
                        "rate_limit_exceeded",
                        headers=_retry_headers(wait),
                    )
            self._requests.take(1)
            self._tokens.take(tokens)
            return None

    def _rate_limit_headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers as of now; the caller holds the lock."""
        now = self._now()
        self._requests.refill(now)
        self._tokens.refill(now)
        return self._requests.headers("requests", self.time_scale) | self._tokens.headers("tokens", self.time_scale)

    def _embed(self, job: _Job, shuffle: bool, seed: int) -> _Reply:
        data = []
        for index, item in enumerate(job.inputs):
            vector = embedding_for(item, job.model, job.dimensions)
            encoded: str | list[float] = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if job.encoding_format == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        if shuffle and len(data) > 1:
            random.Random(seed).shuffle(data)
            if all(entry["index"] == position for position, entry in enumerate(data)):
                data.reverse()
        tokens = sum(job.token_counts)
        with self._lock:
            self._inputs_embedded += len(data)
            self._tokens_served += tokens
        body = {
            "object": "list",
            "data": data,
            "model": job.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _Reply(200, body, {"openai-model": job.model})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: LoopbackOpenAI) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a sandboxed resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close every open connection so idle keep-alive handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or vanish mid-answer are part of the job, not server bugs.
        if self.app.closing or isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopback-openai"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.app.batches.route(self, "POST", body):
            return
        reply = self.server.app.handle(self.path, self.headers.get("Authorization"), body)
        if reply is None:
            self.close_connection = True
        else:
            self._send(reply)

    def do_GET(self) -> None:
        if self.server.app.batches.route(self, "GET", b""):
            return
        self._send(_error(404, f"Invalid URL (GET {self.path})"))

    def _send(self, reply: _Reply) -> None:
        payload = json.dumps(reply.body, separators=(",", ":")).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback OpenAI embeddings server.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute (default unlimited)")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute (default unlimited)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="virtual minutes per real minute")
    parser.add_argument("--api-key", default="sk-test", help="the accepted key; '' accepts any")
    parser.add_argument("--latency", type=float, default=0.0, help="real seconds added to each success")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = LoopbackOpenAI(
        args.api_key or None,
        rpm=args.rpm,
        tpm=args.tpm,
        time_scale=args.time_scale,
        port=args.port,
        latency=args.latency,
    )
    with server:
        print(server.base_url, file=sys.stderr, flush=True)
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
