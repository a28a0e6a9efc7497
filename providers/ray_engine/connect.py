"""Importing Ray and connecting to it: an embedded local Ray, a cluster by address, or the caller's.

Ray's own import and connection failures are translated here, once, into our errors: a missing
extra is a `ConfigurationError` with the install command; an address nothing answers on is a
`ProviderUnavailableError` within seconds (Ray itself would retry for a minute or more).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from providers.errors import ConfigurationError, ProviderUnavailableError
from providers.local_model.encoders import usable_cores

__all__ = ["INSTALL_HINT", "RayConnection", "check_ray", "connect", "import_ray", "running_local_ray"]

INSTALL_HINT = "pip install 'signal-hub-embeddings[ray]'"
_CLIENT_PORT = 10001  # `ray://host` without a port: Ray Client's default
_GCS_PORT = 6379  # `host` without a port: a head node's default
_REACH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RayConnection:
    ray: ModuleType
    where: str
    """"local Ray (N CPUs)", the address, or "the caller's Ray" when Ray was already initialised."""
    cpus: float
    """CPUs the cluster has, as Ray counts them."""


def import_ray() -> ModuleType:
    """Ray, with Ray Data; or a `ConfigurationError` that says how to install it."""
    try:
        import ray
        import ray.data  # the engine needs Ray Data, which only the `ray[data]` extra brings
    except ImportError as exc:
        raise ConfigurationError(f"the Ray engine needs Ray, which is not installed ({exc}): {INSTALL_HINT}.") from exc
    return ray


def check_ray(address: str | None) -> ModuleType:
    """Ray, once it is known to be installed and `address` (or RAY_ADDRESS), if any, to answer."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "local", "auto"):
        _check_reachable(address)
    return ray


@contextmanager
def connect(address: str | None) -> Iterator[RayConnection]:
    """Use the caller's Ray if it is initialised; else connect to `address` or RAY_ADDRESS; else to the Ray
    that `ray start --head` left running here; else start a local Ray.

    An address is checked first, even with Ray initialised, so a wrong one is never silently ignored.

    A Ray this function starts is shut down when the block ends; one it connects to is left running.
    """
    ray = check_ray(address)
    if ray.is_initialized():
        yield RayConnection(ray, "the caller's Ray", _cpus(ray))
        return
    options = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and (running := running_local_ray(ray)) is not None:
        # A Ray left running by `ray start --head` saves this job Ray's start-up (seconds, each run).
        ray.init(address="auto", logging_level=logging.WARNING, log_to_driver=False)
        try:
            yield RayConnection(ray, f"the running local Ray at {running}", _cpus(ray))
        finally:
            ray.shutdown()  # disconnects this driver; the cluster keeps running
        return
    if address in (None, "local"):
        cores = usable_cores()
        ray.init(num_cpus=cores, **options)
        where = f"local Ray ({cores} CPUs)"
    else:
        assert address is not None
        if address.startswith("ray://"):
            del options["include_dashboard"]  # a Ray Client connection takes no dashboard option
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise ProviderUnavailableError(
                f"cannot connect to the Ray cluster at {address}: {exc}. Check --ray-address or RAY_ADDRESS."
            ) from exc
        where = address
    try:
        yield RayConnection(ray, where, _cpus(ray))
    finally:
        ray.shutdown()


def running_local_ray(ray: ModuleType) -> str | None:
    """The address of the Ray that `ray start` last left running on this machine, if its GCS still runs."""
    try:  # Ray's own look-ups (private helpers): the address file `ray start` writes, and live GCS processes
        address = ray._private.utils.read_ray_address()
        live = ray._private.services.find_gcs_addresses() if address else ()
    except (AttributeError, OSError):  # a Ray without them: start our own
        return None
    return str(address) if address and address in live else None  # else a stale file from a stopped Ray


def _cpus(ray: ModuleType) -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming host:port, when nothing listens at a cluster address."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").split("/", 1)[0]
    host, _, port_text = rest.rpartition(":")
    if not host:
        host, port_text = rest, str(_CLIENT_PORT if client else _GCS_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigurationError(
            f"Ray address {address!r} is not host:port or ray://host:port; fix --ray-address or RAY_ADDRESS."
        ) from None
    try:
        socket.create_connection((host, port), timeout=_REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ProviderUnavailableError(
            f"cannot reach the Ray cluster at {host}:{port} ({exc.strerror or exc}): start it (`ray start --head`) "
            "or fix --ray-address / RAY_ADDRESS."
        ) from exc
