"""The provider registry: every provider declared once, in its own module, and found here.

A provider module declares, at module level, one `ProviderSpec`:

```python
PROVIDER = ProviderSpec(name="compatible", factory=_build, read_options=CompatibleOptions.from_env, ...)
```

and nothing else needs to know it exists. The MCP `provider` argument, the command line's
`--provider` choices, the check of `SIGNAL_HUB_FALLBACK_CHAIN`, `list_providers` and the
README's provider table all come from `provider_specs()`.

Modules are found by that line (`PROVIDER = ProviderSpec(`) in the package's sources, and only
those are imported; a declaring module keeps its heavy imports (SDKs, models) inside its factory.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from providers.errors import ConfigurationError

if TYPE_CHECKING:
    from providers.base import EmbeddingProvider
    from providers.settings import Settings

__all__ = [
    "ProviderSpec",
    "check_provider_names",
    "one_length_only",
    "provider_names",
    "provider_spec",
    "provider_specs",
    "provider_table",
]

ProviderFactory = Callable[["Settings", "str | None", "int | None"], "EmbeddingProvider"]
"""Builds a provider from the settings, a model name and a vector length (None: the defaults)."""

_DECLARATION = re.compile(r"^PROVIDER = ProviderSpec\(", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class ProviderSpec:
    """What the rest of the program knows of one provider."""

    name: str
    """As written in settings, tool arguments and results."""
    factory: ProviderFactory
    summary: str
    """One line for the README's provider table and `--help`."""
    order: int = 100
    """Place in listings, lowest first."""
    price: Callable[[Settings, str], float | None] = lambda settings, model: None
    """USD per 1M tokens of a model (None: unknown; 0: free)."""
    read_options: Callable[[Mapping[str, str]], Any] | None = None
    """Reads and checks the provider's own `SIGNAL_HUB_<NAME>_*` variables; a bad one raises."""
    variables: tuple[str, ...] = field(default=())
    """The variables a user sets to use it (for the README table)."""


@functools.cache
def provider_specs() -> tuple[ProviderSpec, ...]:
    """Every declared provider, in listing order."""
    package = Path(__file__).parent
    specs = []
    for source in sorted(package.glob("*.py")):
        if source.stem == "registry" or not _DECLARATION.search(source.read_text(encoding="utf-8")):
            continue
        module = importlib.import_module(f"{__package__}.{source.stem}")
        spec = getattr(module, "PROVIDER", None)
        if not isinstance(spec, ProviderSpec):  # pragma: no cover - a declaration bug, not user input
            raise TypeError(f"{module.__name__}.PROVIDER is not a ProviderSpec")
        specs.append(spec)
    specs.sort(key=lambda spec: (spec.order, spec.name))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):  # pragma: no cover - a declaration bug
        raise TypeError(f"two providers share a name: {names}")
    return tuple(specs)


def provider_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in provider_specs())


def provider_spec(name: str) -> ProviderSpec | None:
    return next((spec for spec in provider_specs() if spec.name == name), None)


def one_length_only(provider: EmbeddingProvider, dimensions: int | None) -> EmbeddingProvider:
    """A provider whose model makes one vector length refuses to be asked for another."""
    if dimensions is not None and dimensions != provider.dimensions:
        raise ConfigurationError(
            f"{provider.name} model {provider.model!r} makes {provider.dimensions}-dimension vectors; "
            f"it cannot make {dimensions}."
        )
    return provider


def check_provider_names(names: tuple[str, ...], variable: str) -> None:
    """Refuse names no provider declares, naming the variable and the choices."""
    known = provider_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigurationError(
            f"{variable} names unknown provider{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from: {', '.join(known)}."
        )


def provider_table() -> str:
    """The README's provider table (a test keeps the README in step with it)."""
    rows = ["| provider | what it is | set |", "|---|---|---|"]
    for spec in provider_specs():
        variables = ", ".join(f"`{name}`" for name in spec.variables) or "—"
        rows.append(f"| `{spec.name}` | {spec.summary} | {variables} |")
    return "\n".join(rows)
