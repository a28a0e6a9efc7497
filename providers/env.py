"""Reading environment variables: one checked parser per kind of value, shared by every options object.

Every refusal names the variable and what it must be, and never echoes a secret.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from providers.errors import ConfigurationError

__all__ = [
    "NON_NEGATIVE_INT",
    "NON_NEGATIVE_USD",
    "POSITIVE_INT",
    "choice",
    "number",
    "optional",
    "parse_pairs",
    "parsed",
    "positive",
    "read_api_key",
    "unexpanded",
]

_Choice = TypeVar("_Choice", bound=str)


def read_api_key(env: Mapping[str, str], name: str) -> str | None:
    """The key in variable `name`, or None when unset, empty or an unexpanded `${...}` placeholder.

    A key with whitespace (a pasted newline) or a non-ASCII character is refused by name: sent
    as it is, it fails as a network problem or a bare encoding error. The key is never echoed.
    """
    raw = env.get(name)
    if raw is None or unexpanded(raw) or not raw.strip():
        return None
    for position, char in enumerate(raw):
        if char.isspace():
            what = "a newline" if char in "\r\n" else "whitespace"
            raise ConfigurationError(
                f"{name} contains {what} at character {position + 1}: copy the key again without it."
            )
        if not char.isascii() or not char.isprintable():
            raise ConfigurationError(
                f"{name} contains a non-ASCII or control character at character {position + 1}: "
                "API keys are plain ASCII; copy the key again."
            )
    return raw


def unexpanded(value: str) -> bool:
    """A host that does not expand `${VAR}` in its config passes it literally: treat it as unset."""
    return value.startswith("${") and value.endswith("}")


def parse_pairs(env: Mapping[str, str], name: str, shape: str) -> dict[str, str]:
    """Parse `key=value,key=value` from one variable."""
    pairs: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in env.get(name, "").split(","))):
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigurationError(f"{name} entry {entry!r} is not {shape}; separate several entries with commas.")
        pairs[key.strip()] = value.strip()
    return pairs


_Number = TypeVar("_Number", int, float)
POSITIVE_INT = ("a positive integer", lambda value: value >= 1)
NON_NEGATIVE_INT = ("zero or a positive integer", lambda value: value >= 0)
NON_NEGATIVE_USD = ("a non-negative number of US dollars", lambda value: math.isfinite(value) and value >= 0)


def positive(unit: str) -> tuple[str, Callable[[float], bool]]:
    return f"a positive number of {unit}", lambda value: math.isfinite(value) and value > 0


def optional(
    env: Mapping[str, str], name: str, parse: Callable[[str], _Number], rule: tuple[str, Callable[[Any], bool]]
) -> _Number | None:
    """The variable's value, or None when it is unset or empty."""
    raw = env.get(name, "").strip()
    return parsed(name, raw, parse, rule) if raw else None


def parsed(name: str, raw: str, parse: Callable[[str], _Number], rule: tuple[str, Callable[[Any], bool]]) -> _Number:
    accepted, holds = rule
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not holds(value):
        raise ConfigurationError(f"{name} must be {accepted}, got {raw!r}.")
    return value


def number(
    env: Mapping[str, str],
    name: str,
    parse: Callable[[str], _Number],
    rule: tuple[str, Callable[[Any], bool]],
    default: _Number,
) -> _Number:
    value = optional(env, name, parse, rule)
    return default if value is None else value


def choice(env: Mapping[str, str], name: str, choices: tuple[_Choice, ...], default: _Choice) -> _Choice:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    for option in choices:
        if raw == option:
            return option
    raise ConfigurationError(f"{name} must be one of: {', '.join(choices)}; got {env[name]!r}.")
