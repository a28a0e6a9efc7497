"""A vendor's description (its models, limits, prices, key variable) and its options from the environment.

```python
VOYAGE = Vendor(name="voyage", label="Voyage AI", key_variable="VOYAGE_API_KEY", base_url=...,
                default_model="voyage-code-3", models={"voyage-code-3": Model(...)})
options = read_vendor_options(VOYAGE, os.environ)   # SIGNAL_HUB_VOYAGE_BASE_URL, _MODEL, _DIMENSIONS, _RPM, ...
```

Apart from `vendor.py` (the provider) so that settings and the registry can read options without
the HTTP client.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from providers.env import POSITIVE_INT, optional
from providers.errors import ConfigurationError
from providers.remote.batching import RequestLimits
from providers.remote.options import RemoteOptions, remote_fields_from_env

if TYPE_CHECKING:
    from providers.settings import Settings

__all__ = ["Model", "Vendor", "VendorOptions", "read_vendor_options", "vendor_options"]


@dataclass(frozen=True, kw_only=True)
class Model:
    """One model of a vendor, as its documentation states it."""

    dimensions: int
    """The vector length it makes unless asked for another."""
    price: float
    """USD per 1M input tokens."""
    limits: RequestLimits
    """Texts per request, tokens per text (its context) and tokens per request."""
    lengths: Collection[int] = ()
    """The other vector lengths it can make (empty: only `dimensions`)."""


@dataclass(frozen=True, kw_only=True)
class Vendor:
    """What the shared code needs to know of one embedding API."""

    name: str
    """The provider name (`voyage`); the variables are `SIGNAL_HUB_<NAME>_*`."""
    label: str
    """How messages name it ("Voyage AI")."""
    key_variable: str
    base_url: str
    default_model: str
    models: Mapping[str, Model]
    rpm: float | None = None
    """Requests per minute to pace to before any header tells (the documented first tier), None: unknown."""
    tpm: float | None = None
    rate_headers: Mapping[str, str] = field(default_factory=dict)
    """The vendor's rate-limit header names → the `x-ratelimit-*` names the pacer reads."""

    @property
    def prefix(self) -> str:
        return f"SIGNAL_HUB_{self.name.upper()}"

    def ceiling(self) -> RequestLimits:
        """The loosest limits of any of its models: the defaults, which each model's own then lower."""
        every = [model.limits for model in self.models.values()]
        return RequestLimits(
            max_inputs=max(limits.max_inputs for limits in every),
            max_input_tokens=max(limits.max_input_tokens for limits in every),
            max_request_tokens=max(limits.max_request_tokens for limits in every),
        )

    def price(self, settings: Settings, model: str) -> float | None:
        known = self.models.get(model)
        return None if known is None else known.price


@dataclass(frozen=True, kw_only=True)
class VendorOptions(RemoteOptions):
    """A vendor provider's options; every `SIGNAL_HUB_<NAME>_*` variable is a field."""

    base_url: str | None = None
    """None: the vendor's own API."""
    model: str | None = None
    dimensions: int | None = None
    """Shorter (or longer) vectors where the model makes them; None: its default length."""


def read_vendor_options(vendor: Vendor, env: Mapping[str, str]) -> VendorOptions:
    """The vendor's `SIGNAL_HUB_<NAME>_*` variables, checked (a bad one raises naming it)."""
    prefix = vendor.prefix
    default = vendor_options(vendor)
    base_url = env.get(f"{prefix}_BASE_URL", "").strip() or None
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"{prefix}_BASE_URL must be an http(s) URL such as {vendor.base_url}, got {base_url!r}."
            )
    fields = remote_fields_from_env(env, prefix, default)
    # Unset, the pacing limits stay the vendor's documented ones rather than none.
    fields["rpm"] = fields["rpm"] or default.rpm
    fields["tpm"] = fields["tpm"] or default.tpm
    return VendorOptions(
        base_url=base_url,
        model=env.get(f"{prefix}_MODEL", "").strip() or None,
        dimensions=optional(env, f"{prefix}_DIMENSIONS", int, POSITIVE_INT),
        **fields,
    )


def vendor_options(vendor: Vendor, settings: Settings | None = None) -> VendorOptions:
    """The options `Settings.from_env` read for this vendor, else its defaults."""
    found: Any = settings.provider_options.get(vendor.name) if settings is not None else None
    if isinstance(found, VendorOptions):
        return found
    return VendorOptions(limits=vendor.ceiling(), rpm=vendor.rpm, tpm=vendor.tpm)
