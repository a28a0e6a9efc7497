"""`signal-hub-embeddings`: the MCP server over stdio (default) or HTTP, a batch `embed` / `cache` job, or `prepare`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from providers import EmbeddingError, Settings
from providers.service.facade import PROVIDER_FACTORIES
from server.commands.embed import add_commands

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="signal-hub-embeddings",
        description="MCP server (stdio) that embeds text for Signal Hub, and batch jobs from the command line. "
        "Configured by SIGNAL_HUB_PROVIDER, SIGNAL_HUB_DATA_DIR, OPENAI_API_KEY and OPENAI_BASE_URL.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{serve,embed,cache,prepare}")
    serving = commands.add_parser("serve", help="run the MCP server on stdio (the default) or streamable HTTP")
    serving.add_argument(
        "--transport",
        choices=("stdio", "http"),
        help="stdio (default; SIGNAL_HUB_TRANSPORT) or http: one server for many clients",
    )
    serving.add_argument("--host", help="http: the address to listen on (SIGNAL_HUB_HTTP_HOST, default 127.0.0.1)")
    serving.add_argument("--port", type=int, help="http: the port (SIGNAL_HUB_HTTP_PORT, default 8000; 0 picks one)")
    add_commands(commands)
    commands.add_parser(
        "prepare", help="check the local model and build its fast backend now (once), so the first call is quick"
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


def refuse(problem: Exception) -> int:
    """One line on stderr saying what is wrong and what to do, and exit status 2: no traceback."""
    print(f"signal-hub-embeddings: {' '.join(str(problem).split())}", file=sys.stderr)
    return 2


def serve(settings: Settings) -> int:
    """Build the service first (provider, ledger and cache checked), then serve MCP on stdio."""
    import anyio

    from providers import EmbeddingService
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
    anyio.run(serve_stdio, build_server(settings, lambda _: service), ready)
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
    finally:
        # Stopped cleanly: one more SIGTERM or SIGINT while the interpreter winds down changes nothing.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return 0


def prepare(settings: Settings) -> int:
    """Load the local model as the server would: weights checked, ONNX export made and cached."""
    import anyio

    from providers.local import LocalProvider

    async def load() -> str:
        provider = LocalProvider.from_settings(settings)
        try:
            await provider.embed(["def warm_up(): pass"])
            runtime = provider.runtime
            assert runtime is not None
            return f"{provider.model} ({runtime.backend} on {runtime.device}, {runtime.threads} threads)"
        finally:
            await provider.aclose()

    try:
        ready = anyio.run(load)
    except EmbeddingError as exc:
        print(f"signal-hub-embeddings: the local model is not usable: {exc}", file=sys.stderr)
        return 1
    print(f"signal-hub-embeddings: local model ready: {ready}; data in {settings.resolved_data_dir}", file=sys.stderr)
    return 0
