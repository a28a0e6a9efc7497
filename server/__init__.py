"""The MCP adapter over the `providers` core, and the command-line entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["build_server"]

if TYPE_CHECKING:
    from server.tools.app import build_server


def __getattr__(name: str) -> Any:
    # Imported on first use: the batch commands of the CLI never load the MCP SDK.
    if name == "build_server":
        from server.tools.app import build_server

        return build_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
