"""The stdio transport `serve` uses: the MCP SDK's, plus an answer to every request line it cannot read.

The SDK's reader (`mcp.server.stdio`) turns a line that fails validation into an exception on the
read stream, and the server only logs that at debug level: the client never hears back. A
JavaScript client that cuts an emoji's surrogate pair sends such a line ("\\ud800" fits JSON's
grammar but is not Unicode, so pydantic refuses it) and then waits forever. Here each such line
whose request `id` can still be read is answered at once with a JSON-RPC error naming the problem.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server as sdk_stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

if TYPE_CHECKING:
    from mcp.shared._stream_protocols import ReadStream, WriteStream

__all__ = ["answer_unreadable", "serve_stdio", "stdio_server"]

logger = logging.getLogger(__name__)

Incoming = SessionMessage | Exception


async def serve_stdio(server: MCPServer[Any], ready: str | None = None) -> None:
    """Serve `server` on stdin/stdout until stdin closes; print `ready` on stderr once listening."""
    # What `MCPServer.run_stdio_async` serves, over our transport; the SDK offers no public handle.
    lowlevel = server._lowlevel_server
    async with stdio_server() as (read_stream, write_stream):
        if ready:
            print(ready, file=sys.stderr, flush=True)
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


@asynccontextmanager
async def stdio_server() -> AsyncIterator[tuple[ReadStream[Incoming], WriteStream[SessionMessage]]]:
    """The SDK's stdio streams, with unreadable request lines answered instead of dropped."""
    async with sdk_stdio_server() as (read_stream, write_stream):
        yield _AnsweringReader(read_stream, write_stream), write_stream


class _AnsweringReader:
    """Passes valid messages on; answers an unreadable request line itself and reads on."""

    def __init__(self, inner: ReadStream[Incoming], answers: WriteStream[SessionMessage]) -> None:
        self._inner = inner
        self._answers = answers
        self.last_context = None  # the SDK's dispatcher reads the sender's context from here

    async def receive(self) -> Incoming:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                self.last_context = getattr(self._inner, "last_context", None)
                return item
            answer = answer_unreadable(item)
            if answer is None:
                logger.warning("ignored a line that is not a JSON-RPC request with an id: %s", _brief(item))
                continue
            logger.warning("answered request %r with an error: %s", answer.id, answer.error.message)
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await self._answers.send(SessionMessage(answer))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _AnsweringReader:
        return self

    async def __anext__(self) -> Incoming:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _AnsweringReader:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def answer_unreadable(error: Exception) -> JSONRPCError | None:
    """The JSON-RPC error for a line the SDK could not read, or None when it has no request id to answer."""
    if not isinstance(error, ValidationError):
        return None
    message = _message_of(error)
    if message is None or "method" not in message:
        return None  # a response or garbage: nobody waits for an answer to it
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str) or _lone_surrogate(request_id):
        return None  # a notification, or an id that cannot be echoed
    where = _lone_surrogate(message)
    if where is not None:
        path, value = where
        code = INVALID_PARAMS if path.startswith("params") else PARSE_ERROR
        text = (
            f"{path} holds a lone surrogate escape ({value}), which is not valid Unicode: "
            "send whole surrogate pairs, or U+FFFD in place of the broken half."
        )
    else:
        code = INVALID_REQUEST
        text = "not a valid JSON-RPC request: " + "; ".join(
            f"{'.'.join(map(str, detail['loc'][1:])) or 'message'}: {detail['msg']}"
            for detail in error.errors(include_url=False)
            if detail["loc"][:1] == ("JSONRPCRequest",)
        )
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=text))


def _message_of(error: ValidationError) -> dict[str, Any] | None:
    """The message the line held, read leniently: Python's json takes lone surrogates, pydantic does not."""
    for detail in error.errors(include_url=False):
        raw = detail.get("input")
        if detail["type"] == "json_invalid" and isinstance(raw, str | bytes | bytearray):
            try:
                parsed = json.loads(raw)
            except ValueError:
                return None
            return parsed if isinstance(parsed, dict) else None
        if detail["type"] == "missing" and len(detail["loc"]) == 2 and isinstance(raw, dict):
            return raw  # a required field of the message itself is missing: the input is the whole message
    return None


def _lone_surrogate(value: object, path: str = "") -> tuple[str, str] | None:
    """Where the first string (or key) with a lone surrogate is, and that surrogate, escaped."""
    if isinstance(value, str):
        bad = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
        return None if bad is None else (path or "message", ascii(bad).strip("'"))
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if (found := _lone_surrogate(key, f"{path or 'message'} (a key)")) is not None:
                return found
            if (found := _lone_surrogate(item, inner)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _lone_surrogate(item, f"{path}[{index}]")) is not None:
                return found
    return None


def _brief(error: Exception) -> str:
    return ascii(str(error).splitlines()[0] if str(error) else type(error).__name__)[:200]
