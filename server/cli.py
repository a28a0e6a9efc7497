"""`signal-hub-embeddings`: run the MCP server over stdio."""

from __future__ import annotations

import argparse
import logging
import sys

from providers import EmbeddingError, Settings
from providers.service import PROVIDER_FACTORIES

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="signal-hub-embeddings",
        description="MCP server (stdio) that embeds text for Signal Hub. "
        "Configured by SIGNAL_HUB_PROVIDER, SIGNAL_HUB_DATA_DIR, OPENAI_API_KEY and OPENAI_BASE_URL.",
    )
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve", help="serve (default): run the MCP server on stdio")
    parser.parse_args(argv)

    # stdout carries JSON-RPC: every log line and progress bar goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        if settings.provider not in PROVIDER_FACTORIES:
            raise EmbeddingError(
                f"SIGNAL_HUB_PROVIDER={settings.provider!r} is not a provider; use one of: {', '.join(PROVIDER_FACTORIES)}."
            )
    except EmbeddingError as exc:
        print(f"signal-hub-embeddings: {exc}", file=sys.stderr)
        return 2
    from .app import build_server

    build_server(settings).run("stdio")
    return 0
