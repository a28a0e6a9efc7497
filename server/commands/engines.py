"""The `embed` command's engines: `--engine in-process|batch-api|ray` and their options.

signal-hub-embeddings embed chunks.jsonl -o vectors.jsonl --provider openai --engine batch-api [--no-wait]
signal-hub-embeddings embed chunks.jsonl -o vectors.npy --engine ray [--ray-address ADDRESS] [--actors N]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from providers import EmbeddingService, InputError, Settings
from providers.jobs.engine import ENGINES, InProcessEngine, JobEngine, build_engine

__all__ = ["EngineOptions", "add_engine_arguments", "default_provider", "engine_options", "open_engine"]


@dataclass(frozen=True)
class EngineOptions:
    engine: str = "in-process"
    ray_address: str | None = None
    actors: int | None = None
    poll_s: float | None = None
    wait: bool = True
    """batch-api: wait for the batches (else submit or check them, and stop)."""


def add_engine_arguments(embed: Any) -> None:
    embed.add_argument(
        "--engine",
        choices=ENGINES,
        default="in-process",
        help="in-process (default); batch-api: OpenAI's Batch API, half price, waits for the batches "
        "(run again after a kill, it re-attaches); ray: the local model on Ray Data",
    )
    embed.add_argument(
        "--ray-address",
        help="--engine ray: a cluster (ray://host:10001, host:6379); default RAY_ADDRESS, else a local Ray",
    )
    embed.add_argument("--actors", type=int, help="--engine ray: actors embedding at once (default: one per CPU)")
    embed.add_argument(
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="--engine batch-api: seconds between the first polls (default 10)",
    )
    embed.add_argument(
        "--no-wait",
        action="store_true",
        help="--engine batch-api: submit the batches (or check on them) and exit 75 while they run; "
        "the same command again collects them",
    )


def engine_options(args: argparse.Namespace) -> EngineOptions:
    if args.engine != "ray" and (args.ray_address or args.actors):
        raise InputError("--ray-address and --actors go with --engine ray.")
    if args.engine != "batch-api" and (args.no_wait or args.poll_interval is not None):
        raise InputError("--no-wait and --poll-interval go with --engine batch-api.")
    if args.actors is not None and args.actors < 1:
        raise InputError(f"--actors must be at least 1, not {args.actors}.")
    if args.poll_interval is not None and not args.poll_interval > 0:
        raise InputError(f"--poll-interval must be a positive number of seconds, not {args.poll_interval}.")
    return EngineOptions(args.engine, args.ray_address, args.actors, args.poll_interval, not args.no_wait)


def default_provider(options: EngineOptions) -> str | None:
    """The provider an engine implies when --provider is not given (None: SIGNAL_HUB_PROVIDER)."""
    return {"batch-api": "openai", "ray": "local"}.get(options.engine)


def open_engine(options: EngineOptions, settings: Settings, service: EmbeddingService) -> JobEngine:
    """The engine to run `embed` with; its provider (and space) is the service's."""
    if options.engine == "in-process":
        return InProcessEngine(service)
    return build_engine(
        options.engine,
        settings,
        lambda _: service.provider,
        ray_address=options.ray_address,
        actors=options.actors,
        poll_s=options.poll_s,
        wait=options.wait,
    )
