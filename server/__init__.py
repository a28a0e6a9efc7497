"""The MCP adapter over the `providers` core, and the command-line entry point."""

from .app import build_server

__all__ = ["build_server"]
