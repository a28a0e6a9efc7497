"""Who may call the HTTP server: bearer tokens from `SIGNAL_HUB_HTTP_TOKENS_FILE`, one `name:token` a line.

The tokens are checked by the MCP SDK's bearer middleware through its `TokenVerifier` protocol,
so an OAuth issuer's verifier can take this one's place with no change to the tools. The
client's name (never its token) is what the ledger, `get_cost`, jobs and metrics see.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext

from providers.clients import NO_CLIENT, as_client
from providers.errors import ConfigurationError

__all__ = ["ClientMiddleware", "StaticTokens", "read_tokens"]

_MIN_TOKEN_CHARS = 16


def read_tokens(path: Path) -> dict[str, str]:
    """Client name -> token, from a file of `name:token` lines (blank lines and `#` comments skipped).

    Every problem names the file and the line, never the token on it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"SIGNAL_HUB_HTTP_TOKENS_FILE={path} cannot be read ({exc}); fix the path.") from exc
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = (part.strip() for part in line.partition(":"))
        where = f"{path} line {number}"
        if not colon or not name or not token:
            raise ConfigurationError(f"{where} is not `name:token`; write one client a line, e.g. alice:<token>.")
        if name == NO_CLIENT or any(c.isspace() for c in name):
            raise ConfigurationError(f"{where}: the client name {name!r} is reserved or has spaces; choose another.")
        if len(token) < _MIN_TOKEN_CHARS or not token.isascii() or any(c.isspace() for c in token):
            raise ConfigurationError(
                f"{where}: the token of {name!r} must be at least {_MIN_TOKEN_CHARS} ASCII characters without spaces "
                "(e.g. `openssl rand -hex 32`)."
            )
        if name in tokens:
            raise ConfigurationError(f"{where}: client {name!r} is listed twice; give each client one line.")
        if token in tokens.values():
            raise ConfigurationError(f"{where}: the token of {name!r} is another client's too; give each its own.")
        tokens[name] = token
    if not tokens:
        raise ConfigurationError(f"SIGNAL_HUB_HTTP_TOKENS_FILE={path} lists no `name:token` line; add one a client.")
    return tokens


class StaticTokens:
    """A `TokenVerifier` over a fixed set of tokens, compared in constant time."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]

    @property
    def clients(self) -> list[str]:
        return [name for name, _ in self._tokens]

    async def verify_token(self, token: str) -> AccessToken | None:
        offered = token.encode("utf-8", "surrogatepass")
        found = None
        for name, known in self._tokens:  # every entry is compared: the time says nothing of which matched
            if hmac.compare_digest(offered, known):
                found = name
        return None if found is None else AccessToken(token=token, client_id=found, scopes=[])


class ClientMiddleware(ServerMiddleware[Any]):
    """Runs each request as the client its bearer token names (`providers.clients`)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        token = get_access_token()
        with as_client(None if token is None else token.client_id):
            return await call_next(ctx)
