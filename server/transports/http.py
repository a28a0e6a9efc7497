"""`serve --transport http`: one server for a team, the MCP SDK's streamable HTTP app under uvicorn.

Endpoint `/mcp`, stateless (any replica can answer any request; both protocol eras the SDK
speaks), bearer tokens (`http_auth.py`), Host/Origin checks (the SDK's
`TransportSecuritySettings`), a body limit that fits our own call limits with a JSON-RPC error
over it, `GET /healthz` and `GET /metrics` (`http_metrics.py`). SIGINT and SIGTERM stop it
through `server/shutdown.py`, shared with stdio: no new connections or calls, in-flight calls get
`grace_s` to finish, then the lifespan closes (running jobs are left `interrupted`, budget
reservations released) and the process exits 0.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp import MCPError
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import INTERNAL_ERROR, INVALID_REQUEST
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from providers import EmbeddingService
from providers.env import number, positive
from providers.errors import ConfigurationError
from providers.settings import InputLimits
from server.shutdown import Shutdown, serve_until_stopped
from server.tools.jobs import runner_of
from server.transports.http_auth import ClientMiddleware, StaticTokens, read_tokens
from server.transports.http_metrics import ServiceCollector, ToolMetrics, metrics_registry

__all__ = ["HttpOptions", "build_http_app", "max_body_bytes", "serve_http"]

logger = logging.getLogger(__name__)

_LOOPBACK_NAMES = ("localhost",)
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True, kw_only=True)
class HttpOptions:
    """Where and how the HTTP server listens; `from_env` reads `SIGNAL_HUB_HTTP_*`."""

    host: str = "127.0.0.1"
    port: int = 8000
    tokens_file: Path | None = None
    metrics_public: bool = False
    allowed_hosts: tuple[str, ...] = ()
    """Host headers accepted beyond the bind address and this machine's names (a proxy's public name)."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins accepted beyond those of the allowed hosts."""
    grace_s: float = 10.0
    """How long in-flight calls may take to finish after SIGTERM or SIGINT."""
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, host: str | None = None, port: int | None = None) -> HttpOptions:
        """The options from the environment (flags first); refuses an exposed server without tokens."""
        tokens_path = env.get("SIGNAL_HUB_HTTP_TOKENS_FILE", "").strip()
        options = cls(
            host=(host or env.get("SIGNAL_HUB_HTTP_HOST", "").strip() or "127.0.0.1"),
            port=port if port is not None else number(env, "SIGNAL_HUB_HTTP_PORT", int, _PORT, 8000),
            tokens_file=Path(tokens_path).expanduser() if tokens_path else None,
            metrics_public=env.get("SIGNAL_HUB_METRICS_PUBLIC", "").strip().lower() not in _FALSE,
            allowed_hosts=_listed(env.get("SIGNAL_HUB_HTTP_ALLOWED_HOSTS", "")),
            allowed_origins=_listed(env.get("SIGNAL_HUB_HTTP_ALLOWED_ORIGINS", "")),
            grace_s=number(env, "SIGNAL_HUB_HTTP_GRACE_S", float, positive("seconds"), 10.0),
        )
        if not _PORT[1](options.port):
            raise ConfigurationError(f"--port {options.port} is not a port: give one between 0 and 65535.")
        if options.tokens_file is None:
            if not is_loopback(options.host):
                raise ConfigurationError(
                    f"refusing to serve on {options.host}, beyond this machine, without tokens: set "
                    "SIGNAL_HUB_HTTP_TOKENS_FILE to a file of name:token lines, or use --host 127.0.0.1."
                )
            return options
        return dataclasses.replace(options, tokens=read_tokens(options.tokens_file))


_PORT: tuple[str, Callable[[Any], bool]] = ("a port between 0 and 65535", lambda value: 0 <= value <= 65535)


def _listed(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def is_loopback(host: str) -> bool:
    if host.strip().lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def max_body_bytes(limits: InputLimits) -> int:
    """The largest request body: any call within our character limit fits, each character escaped
    as `\\uXXXX` (6 bytes) in the worst case, with room for the JSON-RPC envelope."""
    return 6 * limits.max_total_chars + 1_048_576


def security_settings(options: HttpOptions) -> TransportSecuritySettings:
    """Host and Origin checks: loopback, the bind address and this machine's names, plus the configured ones."""
    names = {"127.0.0.1", "localhost", "[::1]", *options.allowed_hosts}
    if not is_loopback(options.host):
        names |= {socket.gethostname(), socket.getfqdn()}
        if options.host not in ("0.0.0.0", "::"):
            names.add(options.host if ":" not in options.host else f"[{options.host}]")
    hosts = sorted({pattern for name in names for pattern in (name, f"{name}:*")})
    origins = sorted({f"{scheme}://{pattern}" for scheme in ("http", "https") for pattern in hosts})
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[*origins, *options.allowed_origins],
    )


class Health:
    """What `/healthz` answers: `starting` (503) until the model is warm, `ready` (200), `stopping` (503)."""

    def __init__(self, service: EmbeddingService) -> None:
        self.service = service
        self.state = "starting"
        self.error: str | None = None

    async def warm_up(self) -> None:
        provider = self.service.provider
        try:
            if provider.name == "local":  # the model loads once, here, not in the first client's call
                await provider.embed(["def warm_up(): pass"])
        except Exception as exc:  # the server still answers: the calls will say what is wrong
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("warming up %s failed: %s", provider.name, self.error)
        if self.state == "starting":
            self.state = "ready"

    async def answer(self, _: Request) -> Response:
        provider = self.service.provider
        body: dict[str, Any] = {"status": self.state, "provider": provider.name, "model": provider.model}
        if self.error:
            body["warm_up_error"] = self.error
        return JSONResponse(body, status_code=200 if self.state == "ready" else 503)


def build_http_app(server: MCPServer[Any], service: EmbeddingService, options: HttpOptions) -> tuple[ASGIApp, Health]:
    """The ASGI app: `/mcp` (the SDK's streamable HTTP app), `/healthz` and `/metrics`."""
    verifier = StaticTokens(dict(options.tokens)) if options.tokens else None
    registry = metrics_registry()
    registry.register(ServiceCollector(service, lambda: runner_of(service)))
    server.middleware.append(ToolMetrics(registry))
    server.middleware.append(ClientMiddleware())
    health = Health(service)

    async def metrics(request: Request) -> Response:  # on the event loop, like every use of the job store
        if verifier is not None and not options.metrics_public and not isinstance(request.user, AuthenticatedUser):
            return _unauthorized()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    lowlevel = server._lowlevel_server  # what MCPServer.streamable_http_app wraps; it takes no verifier of ours
    limit = max_body_bytes(service.settings.limits)
    app = lowlevel.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        max_request_body_size=limit + 1,  # ours (below) answers first, with a JSON-RPC error
        transport_security=security_settings(options),
        host=options.host,
        # Our own tokens, so no authorization server: the issuer is only named, never asked.
        auth=AuthSettings(issuer_url=AnyHttpUrl(f"http://{options.host}:{options.port}"), resource_server_url=None)
        if verifier
        else None,
        token_verifier=verifier,
        custom_starlette_routes=[
            Route("/healthz", health.answer, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
    )
    app.router.lifespan_context = _with_health(app.router.lifespan_context, health)
    return BodyLimit(app, limit, service.settings.limits.max_total_chars), health


def _with_health(inner: Callable[[Any], Any], health: Health) -> Callable[[Starlette], Any]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app), anyio.create_task_group() as tasks:
            tasks.start_soon(health.warm_up)
            try:
                yield
            finally:
                health.state = "stopping"
                tasks.cancel_scope.cancel()

    return lifespan


def _unauthorized() -> Response:
    body = {"error": "invalid_token", "error_description": "Authentication required"}
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="Authentication required"'}
    return JSONResponse(body, status_code=401, headers=headers)


class BodyLimit:
    """Answers a request body over `limit` bytes with a JSON-RPC error (HTTP 413) instead of reading on."""

    def __init__(self, app: ASGIApp, limit: int, max_chars: int) -> None:
        self.app = app
        self.limit = limit
        self.message = (
            f"request body over {limit:,} bytes: one call takes at most {max_chars:,} characters of text; "
            "split the texts over several calls."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive, {"more_body": True})
            await self._refuse(send)
            return
        body, messages = 0, []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += len(message.get("body", b""))
            if body > self.limit:
                await self._drain(receive, message)
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, message: Message) -> None:
        """Read (and drop) the rest of the body, up to as much again, so the client can read the answer:
        one still sending when the connection closes sees a reset, not our error."""
        dropped = 0
        while message.get("more_body", False) and dropped <= self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))

    async def _refuse(self, send: Send) -> None:
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": self.message}}
        payload = json.dumps(error).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


class _Server(uvicorn.Server):
    """uvicorn, told to stop by `server/shutdown.py` (which catches SIGINT and SIGTERM), not by its own handlers."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self._ready = ready

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # `serve_until_stopped` has them: a second signal must not force an exit or be re-raised

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._ready(_address(self.servers))


def _address(servers: Iterable[Any]) -> str:
    for listening in servers:
        for sock in listening.sockets:
            host, port = sock.getsockname()[:2]
            return f"http://{host if ':' not in host else f'[{host}]'}:{port}/mcp"
    return "?"  # pragma: no cover - uvicorn started with no socket


class _InFlight(ServerMiddleware[Any]):
    """Tool calls in flight, for the stop (`Shutdown.call`); once stopping, new ones are refused."""

    def __init__(self, shutdown: Shutdown) -> None:
        self._shutdown = shutdown

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        if self._shutdown.stopping:
            raise MCPError(INTERNAL_ERROR, "the server is stopping; call again once it is back (or another replica).")
        with self._shutdown.call(object()):
            return await call_next(ctx)


async def serve_http(
    server: MCPServer[Any], service: EmbeddingService, options: HttpOptions, ready: Callable[[str], str]
) -> None:
    """Serve until SIGINT or SIGTERM; `ready(url)` gives the line printed on stderr once listening."""
    await serve_until_stopped(
        lambda shutdown: _serve(server, service, options, ready, shutdown),
        grace_s=options.grace_s,
        ignore_once_stopped=True,
    )


async def _serve(
    server: MCPServer[Any],
    service: EmbeddingService,
    options: HttpOptions,
    ready: Callable[[str], str],
    shutdown: Shutdown,
) -> None:
    server.middleware.append(_InFlight(shutdown))
    app, _ = build_http_app(server, service, options)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # uvicorn stops accepting at once, then waits this long for requests in flight (the grace).
        timeout_graceful_shutdown=max(1, round(options.grace_s)),
        server_header=False,
    )
    http = _Server(config, lambda url: print(ready(url), file=sys.stderr, flush=True))

    async def stop_when_asked() -> None:
        await shutdown.requested.wait()
        http.should_exit = True

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_when_asked)
        try:
            await http.serve()
        except SystemExit:  # uvicorn's answer to a port it cannot bind; it logged why
            pass
        finally:
            tasks.cancel_scope.cancel()
    if not http.started:
        raise ConfigurationError(f"cannot listen on {options.host}:{options.port}; is the port in use?")
