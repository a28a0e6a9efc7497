"""Log notifications to the client (budget warnings): `logging/setLevel` declared and honoured.

A host on the handshake-era protocol may set the lowest level it wants per session; without a
`logging/setLevel` handler the SDK neither declares the `logging` capability nor answers it
("Method not found"), while our warnings still arrive. From protocol 2026-07-28 on, log
notifications are a per-request opt-in that the SDK filters itself.
"""

from __future__ import annotations

import warnings
from typing import Any, get_args

from mcp import MCPDeprecationWarning
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import Context
from mcp.types import EmptyResult, LoggingLevel, SetLevelRequestParams

__all__ = ["accept_log_levels", "send_log"]

_LEVELS: tuple[LoggingLevel, ...] = get_args(LoggingLevel)  # least severe first (RFC 5424)
_STATE_KEY = "signal-hub-embeddings.log-level"


def _connection_state(session: Any) -> dict[str, Any]:
    """The SDK's per-connection scratch space (`Connection.state`): a session object lives one request.

    `ServerSession` offers no public handle on its connection; without one, `{}` (every level is sent).
    """
    connection = getattr(session, "_connection", None)
    state = getattr(connection, "state", None)
    return state if isinstance(state, dict) else {}


def accept_log_levels(server: Server[Any]) -> None:
    """Answer `logging/setLevel` (and so declare `logging`): each session keeps the level it set."""

    async def set_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        _connection_state(ctx.session)[_STATE_KEY] = params.level
        return EmptyResult()

    server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)


async def send_log(ctx: Context[Any], level: LoggingLevel, message: str, *, logger_name: str) -> None:
    """Send `message` at `level`, unless the session asked for more severe messages only."""
    chosen = _connection_state(ctx.session).get(_STATE_KEY, _LEVELS[0])
    if _LEVELS.index(level) < _LEVELS.index(chosen):
        return
    # Log notifications are deprecated from protocol 2026-07-28 on, but hosts on the
    # handshake-era protocol (and clients that opt in) still show them to the user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await ctx.log(level, message, logger_name=logger_name)
