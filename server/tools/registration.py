"""The MCP server class every tool of ours is registered on, and how a tool is registered.

Three policies are written here once, for every tool (job tools included):
- an argument a tool does not take is refused, naming it and the arguments the tool takes;
- a failure always reaches the model as an error that says what happened and what to do, never
  the SDK's bare "Error executing tool X", and never longer than an answer may be;
- `tools/list` is lean: agents pay for it on every turn, and pydantic's generated schema `title`s
  only repeat the property names.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mcp import MCPError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import Tool, ToolAnnotations
from pydantic import ValidationError

from providers import EmbeddingError
from providers.redaction import redact
from providers.storage.sqlite import storage_error
from server.tools.budget import shorten
from server.tools.client_log import accept_log_levels

__all__ = ["AgentServer", "add_tool", "explain"]

logger = logging.getLogger(__name__)

LifespanT = TypeVar("LifespanT")

_ERRORS_NAMED = 5


class AgentServer(MCPServer[LifespanT]):
    """An `MCPServer` whose every tool failure is explained, and whose tool list is lean.

    `secrets()` gives strings (API keys) that must never appear in an answer.
    """

    def __init__(self, *args: Any, secrets: Callable[[], Iterable[str | None]] = tuple, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._secrets = secrets
        accept_log_levels(self._lowlevel_server)  # the SDK's one handle on its request handlers
        self._arguments: dict[str, tuple[str, ...]] = {}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None) -> Any:
        allowed = await self._arguments_of(name)
        unknown = [key for key in arguments if allowed is not None and key not in allowed]
        if allowed is not None and unknown:
            raise ToolError(self._answer(name, _unknown_arguments(name, unknown, allowed)))
        try:
            return await super().call_tool(name, arguments, context)
        except MCPError:
            raise
        except UnexpectedToolError as exc:
            cause = _original(exc)
            if not isinstance(cause, EmbeddingError):
                logger.error("tool %s failed unexpectedly", name, exc_info=cause)
            raise ToolError(self._answer(name, explain(cause))) from cause
        except ToolError as exc:
            known = [tool.name for tool in await self.list_tools()]
            if name not in known:
                raise ToolError(f"Unknown tool {name!r}: the tools are {', '.join(known)}.") from exc
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(self._answer(name, _invalid_arguments(exc.__cause__))) from exc.__cause__
            raise ToolError(self._redact(shorten(str(exc)))) from exc.__cause__

    async def list_tools(self) -> list[Tool]:
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema = _optional_not_null(_without_titles(tool.input_schema))
            if tool.output_schema is not None:
                tool.output_schema = _without_defaults(_without_titles(tool.output_schema))
        return tools

    async def _arguments_of(self, name: str) -> tuple[str, ...] | None:
        """The argument names `name` takes (from its input schema), or None for a tool we do not know."""
        if name not in self._arguments:
            for tool in await super().list_tools():
                self._arguments[tool.name] = tuple(tool.input_schema.get("properties", {}))
        return self._arguments.get(name)

    def _answer(self, tool: str, message: str) -> str:
        return self._redact(shorten(f"Error executing tool {tool}: {message}"))

    def _redact(self, text: str) -> str:
        return redact(text, [secret for secret in self._secrets() if secret])


def add_tool(
    server: MCPServer[Any],
    fn: Callable[..., Any],
    *,
    title: str,
    read_only: bool = False,
    idempotent: bool = True,
    open_world: bool = False,
) -> None:
    """Register `fn` (its docstring is the description) with a title and annotations.

    `open_world`: a call may reach a remote API. No tool of ours destroys anything.
    """
    annotations = ToolAnnotations(
        read_only_hint=read_only, destructive_hint=False, idempotent_hint=idempotent, open_world_hint=open_world
    )
    server.add_tool(fn, title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)


def explain(error: BaseException) -> str:
    """What went wrong and what to do, for any exception a tool let through."""
    if isinstance(error, EmbeddingError):
        return str(error)  # written to be read: it already says what to do
    what = f"{type(error).__name__}: {error}"
    if isinstance(error, sqlite3.Error):  # a full disk or a lock is passing: only a damaged file is moved aside
        return str(storage_error(error, "cost ledger or vector cache"))
    if isinstance(error, OSError):
        return f"{what}. Check that the data directory (SIGNAL_HUB_DATA_DIR) is writable and the disk has room."
    return (
        f"unexpected {what}. The server is still running: retry the call; if it fails again, report it "
        "with the server's log (stderr)."
    )


def _original(error: UnexpectedToolError) -> BaseException:
    """The exception a tool raised, under the SDK's wrappers."""
    cause: BaseException = error
    while isinstance(cause, UnexpectedToolError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause


def _unknown_arguments(tool: str, unknown: list[str], allowed: tuple[str, ...]) -> str:
    """An agent's misspelt argument would otherwise have no effect and no error."""
    names = ", ".join(repr(name[:40]) for name in unknown[:_ERRORS_NAMED])
    more = f" and {len(unknown) - _ERRORS_NAMED} more" if len(unknown) > _ERRORS_NAMED else ""
    guesses = [match for name in unknown[:_ERRORS_NAMED] for match in difflib.get_close_matches(name, allowed, n=1)]
    hint = f" (did you mean {', '.join(repr(g) for g in dict.fromkeys(guesses))}?)" if guesses else ""
    takes = ", ".join(allowed) if allowed else "no arguments"
    word = "argument" if len(unknown) == 1 and not more else "arguments"
    return f"unknown {word} {names}{more}{hint}; {tool} takes: {takes}. Fix the call and call again."


def _invalid_arguments(error: ValidationError) -> str:
    """The first few argument errors, one line each, without echoing the caller's data."""
    problems = error.errors(include_url=False, include_input=False)
    lines = [f"{'.'.join(str(part) for part in p['loc']) or 'arguments'}: {p['msg']}" for p in problems[:_ERRORS_NAMED]]
    if len(problems) > _ERRORS_NAMED:
        lines.append(f"and {len(problems) - _ERRORS_NAMED} more invalid values")
    return "invalid arguments; " + "; ".join(lines) + ". Fix them and call again."


# Keywords whose value is a map of name -> schema, a schema, or a list of schemas. Other values
# (`default`, `enum`, `const`, ...) are data, and a property may itself be named "title".
_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _without_titles(sub) if isinstance(sub, dict) else sub for name, sub in value.items()}
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            value = _without_titles(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [_without_titles(sub) if isinstance(sub, dict) else sub for sub in value]
        out[key] = value
    return out


def _without_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema without `default`s: an answer always carries its values."""
    properties = {name: {k: v for k, v in sub.items() if k != "default"} for name, sub in schema["properties"].items()}
    return {**schema, "properties": properties}


def _optional_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema whose optional arguments defaulting to null are shown as their non-null type.

    Leaving such an argument out and passing null mean the same (null is still accepted); the
    `anyOf` with a null branch and the `default: null` only cost every agent tokens on every turn.
    """
    required = set(schema.get("required", ()))
    properties = {}
    for name, sub in schema.get("properties", {}).items():
        branches = sub.get("anyOf")
        if name not in required and sub.get("default", ...) is None and isinstance(branches, list):
            kept = [branch for branch in branches if branch != {"type": "null"}]
            if len(kept) == 1 and isinstance(kept[0], dict):
                rest = {k: v for k, v in sub.items() if k not in ("anyOf", "default")}
                sub = {**kept[0], **rest}
        properties[name] = sub
    return {**schema, "properties": properties}
