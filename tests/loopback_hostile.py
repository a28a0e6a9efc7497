"""A loopback HTTP server that answers whatever a test tells it to: for hostile and broken answers.

    def answer(request: Request) -> Answer:
        return Answer(400, json_body({"error": {"message": f"bad: {request.headers['Authorization']}"}}))

    with LoopbackHostile(answer) as server:        # server.base_url ends in /v1
        ...

A body is sent as it is given: with a `Content-Encoding: gzip` header, give it compressed
(`gzip_bomb(size)` inflates to `size` bytes). `requests` records every request.
"""

from __future__ import annotations

import functools
import json
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """By lower-case name."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_body(value: object) -> bytes:
    return json.dumps(value).encode()


@functools.cache
def gzip_bomb(size: int) -> bytes:
    """A JSON-looking start and `size` bytes of spaces, gzip-compressed (about 1,000x smaller), made piece by piece."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = [compressor.compress(b'{"object": "list", "data": [')]
    piece = b" " * 2**20
    for _ in range(size // len(piece)):
        parts.append(compressor.compress(piece))
    parts.append(compressor.flush())
    return b"".join(parts)


class LoopbackHostile:
    def __init__(self, answer: Callable[[Request], Answer]) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> LoopbackHostile:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(app: LoopbackHostile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            app.requests.append(request)
            answer = app.answer(request)
            payload = answer.body
            self.send_response(answer.status)
            for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
