"""`signal-hub-embeddings`: the MCP server over stdio (default) or HTTP, a batch `embed` / `cache` job, or `prepare`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from providers import EmbeddingError, Settings
from providers.service.facade import PROVIDER_FACTORIES
from server.commands.embed import add_commands

__all__ = ["main"]

# The local model's lanes take the GIL for a moment around each model call. At Python's default
# 5 ms switch interval they waited that long behind the event loop's Python work (answers,
# output rows); at 0.5 ms a shared HTTP server with 32 clients embedded 15-20% more a second
# (python -m benchmarks.http_clients).
_SWITCH_INTERVAL_S = 0.0005


def main(argv: list[str] | None = None) -> int:
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    parser = argparse.ArgumentParser(
        prog="signal-hub-embeddings",
        description="MCP server (stdio) that embeds text for Signal Hub, and batch jobs from the command line. "
        "Configured by SIGNAL_HUB_PROVIDER, SIGNAL_HUB_DATA_DIR, OPENAI_API_KEY and OPENAI_BASE_URL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="{serve,embed,cache,prepare}")
    serving = commands.add_parser(
        "serve",
        help="run the MCP server on stdio (the default) or streamable HTTP",
        description="Serve the MCP tools over stdio (JSON-RPC on stdout, logs and the ready line on stderr) "
        "or, with --transport http, on http://HOST:PORT/mcp for many clients. "
        "Stop it with Ctrl-C or SIGTERM (or, on stdio, by closing stdin): calls in flight get 2 s on stdio, "
        "SIGNAL_HUB_HTTP_GRACE_S (10 s) on HTTP, running jobs are checkpointed (resume_job goes on), and it "
        "exits 0. Exit 2: a configuration, ledger or cache problem, named in one line.",
    )
    serving.add_argument(
        "--transport",
        choices=("stdio", "http"),
        help="stdio (default; SIGNAL_HUB_TRANSPORT) or http: one server for many clients",
    )
    serving.add_argument("--host", help="http: the address to listen on (SIGNAL_HUB_HTTP_HOST, default 127.0.0.1)")
    serving.add_argument("--port", type=int, help="http: the port (SIGNAL_HUB_HTTP_PORT, default 8000; 0 picks one)")
    add_commands(commands)
    commands.add_parser(
        "prepare",
        help="check the local model and build its fast backend now (once), so the first call is quick",
        description="Load the local model as the server would: check its weights and build its ONNX Runtime "
        "export under the data directory (once, about 20 s), so the first embedding call does not wait. "
        "Exit 0 ready, 1 the model is not usable, 2 a configuration problem.",
    )
    args = parser.parse_args(argv)

    # stdout carries JSON-RPC: every log line and progress bar goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        if settings.provider not in PROVIDER_FACTORIES:
            raise EmbeddingError(
                f"SIGNAL_HUB_PROVIDER={settings.provider!r} is not a provider; "
                f"use one of: {', '.join(PROVIDER_FACTORIES)}."
            )
    except EmbeddingError as exc:
        return refuse(exc)
    if args.command == "prepare":
        return prepare(settings)
    if args.command not in (None, "serve"):
        return int(args.run(args, settings))
    transport = (
        getattr(args, "transport", None) or os.environ.get("SIGNAL_HUB_TRANSPORT", "").strip().lower() or "stdio"
    )
    if transport == "http":
        return serve_on_http(settings, getattr(args, "host", None), getattr(args, "port", None))
    if transport != "stdio":
        return refuse(EmbeddingError(f"SIGNAL_HUB_TRANSPORT={transport!r} is not a transport; use stdio or http."))
    return serve(settings)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("signal-hub-embeddings")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        return "(not installed)"


def refuse(problem: Exception) -> int:
    """One line on stderr saying what is wrong and what to do, and exit status 2: no traceback."""
    print(f"signal-hub-embeddings: {' '.join(str(problem).split())}", file=sys.stderr)
    return 2


def serve(settings: Settings) -> int:
    """Build the service first (provider, ledger and cache checked), then serve MCP on stdio."""
    import anyio

    from providers import EmbeddingService
    from server.shutdown import serve_until_stopped
    from server.tools.app import build_server
    from server.transports.stdio import serve_stdio

    try:
        service = EmbeddingService(settings=settings)
    except (EmbeddingError, OSError) as exc:
        return refuse(exc)
    active = service.provider
    ready = (
        f"signal-hub-embeddings: ready on stdio (provider {active.name}, model {active.model}, "
        f"data in {settings.resolved_data_dir})"
    )
    server = build_server(settings, lambda _: service)
    # SIGINT, SIGTERM or the end of stdin: calls in flight finish, jobs are checkpointed, exit 0.
    anyio.run(
        functools.partial(serve_until_stopped, ignore_once_stopped=True),
        lambda shutdown: serve_stdio(server, ready, shutdown),
    )
    return 0


def serve_on_http(settings: Settings, host: str | None, port: int | None) -> int:
    """One server for many clients on streamable HTTP (server/transports/http.py); exit 0 on SIGTERM/SIGINT."""
    import anyio

    from providers import EmbeddingService
    from server.tools.app import build_server
    from server.transports.http import HttpOptions, serve_http

    try:
        options = HttpOptions.from_env(os.environ, host=host, port=port)
        service = EmbeddingService(settings=settings)
    except (EmbeddingError, OSError) as exc:
        return refuse(exc)
    active = service.provider
    who = f"{len(options.tokens)} clients with tokens" if options.tokens else "no tokens: this machine only"

    def ready(url: str) -> str:
        return (
            f"signal-hub-embeddings: ready on {url} (provider {active.name}, model {active.model}, {who}, "
            f"data in {settings.resolved_data_dir})"
        )

    try:
        anyio.run(serve_http, build_server(settings, lambda _: service), service, options, ready)
    except EmbeddingError as exc:
        return refuse(exc)
    return 0


def prepare(settings: Settings) -> int:
    """Load the local model as the server would: weights checked, ONNX export made and cached."""
    import anyio

    from providers.local import LocalProvider
    from server.commands.progress import showing_notices
    from server.wording import count

    async def load() -> str:
        provider = LocalProvider.from_settings(settings)
        try:
            await provider.embed(["def warm_up(): pass"])
            runtime = provider.runtime
            assert runtime is not None
            return f"{provider.model} ({runtime.backend} on {runtime.device}, {count(runtime.threads, 'thread')})"
        finally:
            await provider.aclose()

    try:
        with showing_notices():
            ready = anyio.run(load)
    except EmbeddingError as exc:
        print(f"signal-hub-embeddings: the local model is not usable: {exc}", file=sys.stderr)
        return 1
    # Not "ready": on a first `make serve` the server's own ready line follows this one.
    prepared = f"local model prepared: {ready}; data in {settings.resolved_data_dir}"
    print(f"signal-hub-embeddings: {prepared}", file=sys.stderr)
    return 0
