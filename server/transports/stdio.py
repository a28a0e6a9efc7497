"""The stdio transport `serve` uses: the MCP SDK's, plus an answer to every request line it cannot read,
and a clean stop (server/shutdown.py) on SIGINT, SIGTERM or the end of stdin.

The SDK's reader (`mcp.server.stdio`) turns a line that fails validation into an exception on the
read stream, and the server only logs that at debug level: the client never hears back. A
JavaScript client that cuts an emoji's surrogate pair sends such a line ("\\ud800" fits JSON's
grammar but is not Unicode, so pydantic refuses it) and then waits forever. Here each such line
whose request `id` can still be read is answered at once with a JSON-RPC error naming the problem.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server as sdk_stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import ValidationError

from server.shutdown import Shutdown

if TYPE_CHECKING:
    from mcp.shared._stream_protocols import ReadStream, WriteStream

__all__ = ["SHUTTING_DOWN", "answer_unreadable", "serve_stdio", "stdio_server"]

logger = logging.getLogger(__name__)

Incoming = SessionMessage | Exception

SHUTTING_DOWN = -32000
"""The JSON-RPC error code of a request that came after the server began to stop."""


async def serve_stdio(
    server: MCPServer[Any],
    ready: str | None = None,
    shutdown: Shutdown | None = None,
    *,
    wire: tuple[int, anyio.AsyncFile[str]] | None = None,
) -> None:
    """Serve `server` on stdin/stdout until stdin closes or `shutdown` is asked for, then end the session.

    Either way the calls in flight get the shutdown's grace, and the server's lifespan cleans up
    fully before this returns. `ready` is printed on stderr once listening. `wire`: another
    (input descriptor, output file) pair than the process's stdin and stdout.
    """
    shutdown = shutdown or Shutdown()
    # What `MCPServer.run_stdio_async` serves, over our transport; the SDK offers no public handle.
    lowlevel = server._lowlevel_server
    async with stdio_server(shutdown, wire) as (read_stream, write_stream):
        if ready:
            print(ready, file=sys.stderr, flush=True)
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


@asynccontextmanager
async def stdio_server(
    shutdown: Shutdown, wire: tuple[int, anyio.AsyncFile[str]] | None = None
) -> AsyncIterator[tuple[ReadStream[Incoming], WriteStream[SessionMessage]]]:
    """The SDK's stdio streams, over stdin lines that end once `shutdown` has drained the calls in flight.

    Unreadable request lines are answered instead of dropped, and requests that come after the
    stop began are refused.
    """
    lines = _WireLines(shutdown, None if wire is None else wire[0])
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lines.end_when_drained)
            stdin = cast("anyio.AsyncFile[str]", lines)  # the SDK only iterates it
            stdout = None if wire is None else wire[1]
            async with sdk_stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
                try:
                    yield (
                        _AnsweringReader(read_stream, write_stream, shutdown),
                        _AnsweredWriter(write_stream, shutdown),
                    )
                finally:
                    lines.end()  # the SDK's reader ends with it, so its transport closes
            tasks.cancel_scope.cancel()
    finally:
        lines.release()


class _WireLines:
    """stdin's lines, read by a daemon thread, ending when the shutdown has drained.

    The SDK reads stdin in an AnyIO worker thread that cannot be interrupted: the server could
    not stop while a host kept stdin open (SIGINT was ignored), and its thread kept the process
    alive. A daemon thread blocked in `os.read` stops nothing. The end of stdin itself is only a
    request to stop: the calls in flight still get their grace before the session ends.
    """

    def __init__(self, shutdown: Shutdown, fd: int | None = None) -> None:
        self._shutdown = shutdown
        self._send, self._receive = anyio.create_memory_object_stream[str | None](16)
        self._ended = False
        self._waiting: anyio.CancelScope | None = None
        self._restore: Callable[[], None] = lambda: None
        if fd is None:
            fd, self._restore = _claim_stdin()
        token = anyio.lowlevel.current_token()
        threading.Thread(target=self._read, args=(fd, token), name="stdin lines", daemon=True).start()

    def _read(self, fd: int, token: anyio.lowlevel.EventLoopToken) -> None:
        def hand_over(line: str | None) -> None:
            anyio.from_thread.run(self._send.send, line, token=token)

        parts: list[bytes] = []
        try:
            while chunk := os.read(fd, 1 << 16):
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    parts.append(chunk[start : end + 1])
                    hand_over(b"".join(parts).decode("utf-8", "replace"))
                    parts, start = [], end + 1
                if start < len(chunk):
                    parts.append(chunk[start:])
            if parts:
                hand_over(b"".join(parts).decode("utf-8", "replace"))
            hand_over(None)
        except BaseException:  # the loop has finished (a pending hand-over is cancelled) or stdin failed
            logger.debug("stopped reading stdin", exc_info=True)

    def release(self) -> None:
        """Give fd 0 back; a line the thread still reads after this goes nowhere."""
        self._receive.close()
        self._send.close()
        self._restore()

    async def end_when_drained(self) -> None:
        await self._shutdown.drained()
        self.end()

    def end(self) -> None:
        self._ended = True
        if self._waiting is not None:
            self._waiting.cancel()

    def __aiter__(self) -> _WireLines:
        return self

    async def __anext__(self) -> str:
        while not self._ended:
            with anyio.CancelScope() as self._waiting:
                line = await self._receive.receive()
                if line is not None:
                    return line
                self._shutdown.request("stdin closed")
                await anyio.sleep_forever()  # until the calls in flight are answered (`end`)
        raise StopAsyncIteration


def _claim_stdin() -> tuple[int, Callable[[], None]]:
    """A private descriptor of the wire, with fd 0 on the null device meanwhile (as the SDK does).

    So a child process or a stray read sees EOF instead of eating JSON-RPC. The private
    descriptor is never closed: the daemon thread may still be blocked reading it.
    """
    try:
        import fcntl

        wire = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except (ImportError, OSError):  # pragma: no cover - no fcntl (Windows), or no fd 0: read it in place
        return 0, lambda: None
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)

    def restore() -> None:
        with contextlib.suppress(OSError):
            os.dup2(wire, 0)

    return wire, restore


class _AnsweredWriter:
    """The write stream, noting each answer to a request as that call no longer in flight."""

    def __init__(self, inner: WriteStream[SessionMessage], shutdown: Shutdown) -> None:
        self._inner = inner
        self._shutdown = shutdown

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        if isinstance(item.message, JSONRPCResponse | JSONRPCError):
            self._shutdown.call_finished(item.message.id)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _AnsweredWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _AnsweringReader:
    """Passes valid messages on; answers an unreadable request line itself and reads on."""

    def __init__(self, inner: ReadStream[Incoming], answers: WriteStream[SessionMessage], shutdown: Shutdown) -> None:
        self._inner = inner
        self._answers = answers
        self._shutdown = shutdown
        self.last_context = None  # the SDK's dispatcher reads the sender's context from here

    async def receive(self) -> Incoming:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                message = item.message
                if isinstance(message, JSONRPCRequest):
                    if self._shutdown.stopping:
                        await self._refuse(message)
                        continue
                    self._shutdown.call_started(message.id)
                elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
                    self._shutdown.call_finished((message.params or {}).get("requestId"))  # no answer will come
                self.last_context = getattr(self._inner, "last_context", None)
                return item
            answer = answer_unreadable(item)
            if answer is None:
                logger.warning("ignored a line that is not a JSON-RPC request with an id: %s", _brief(item))
                continue
            logger.warning("answered request %r with an error: %s", answer.id, answer.error.message)
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await self._answers.send(SessionMessage(answer))

    async def _refuse(self, request: JSONRPCRequest) -> None:
        text = f"the server is shutting down ({self._shutdown.reason}); start a new session to call it again."
        refusal = JSONRPCError(jsonrpc="2.0", id=request.id, error=ErrorData(code=SHUTTING_DOWN, message=text))
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._answers.send(SessionMessage(refusal))

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
