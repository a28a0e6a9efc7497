"""Who is calling: the client name a server transport authenticated, for the ledger, budgets and jobs.

The HTTP transport sets it for each request from the caller's token (`name:token` lines);
calls over stdio, from the CLI or from Python have no client (None). Context variables
follow a call into its tasks and worker threads, so the ledger reads it where it writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["NO_CLIENT", "as_client", "current_client"]

NO_CLIENT = "(none)"
"""How reports name the calls made with no client (stdio, the CLI, Python)."""

_client: ContextVar[str | None] = ContextVar("signal_hub_client", default=None)


def current_client() -> str | None:
    """The calling client's name, or None outside an authenticated request."""
    return _client.get()


@contextmanager
def as_client(name: str | None) -> Iterator[None]:
    """Run the block as client `name` (None: as no client)."""
    token = _client.set(name)
    try:
        yield
    finally:
        _client.reset(token)
