"""`signal-hub-embeddings cache stats|prune`: the embedding cache from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import anyio

from providers import EmbeddingError, EmbeddingService, Settings

__all__ = ["format_bytes", "run_cache"]

EXIT_OK, EXIT_USAGE = 0, 2
PROG = "signal-hub-embeddings"


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def run_cache(args: argparse.Namespace, settings: Settings) -> int:
    """`cache stats` and `cache prune`, printed on stdout; they work even while SIGNAL_HUB_CACHE=off."""
    if args.cache_command == "prune":
        if args.all == (args.space is not None or args.older_than_days is not None):
            _say("cache prune: say what to delete: --space and/or --older-than-days, or --all.")
            return EXIT_USAGE
        if args.older_than_days is not None and not args.older_than_days >= 0:
            _say("cache prune: --older-than-days must be a number of days, 0 or more.")
            return EXIT_USAGE
    try:
        service = EmbeddingService(settings=dataclasses.replace(settings, cache=True))
    except EmbeddingError as exc:
        _say(f"cache: {exc}")
        return EXIT_USAGE
    try:
        cache = service.cache
        assert cache is not None
        if args.cache_command == "prune":
            older = None if args.older_than_days is None else args.older_than_days * 86_400
            removed = cache.prune(space=args.space, older_than_s=older)
            print(f"pruned {removed:,} entries; {cache.stats().entries:,} left in {cache.path}")
            return EXIT_OK
        stats = cache.stats()
        on_disk = sum(p.stat().st_size for p in cache.path.parent.glob(f"{cache.path.name}*") if p.is_file())
        if args.json:
            keys = {"path": str(cache.path), "enabled": settings.cache, "entries": stats.entries}
            print(json.dumps(keys | {"bytes": stats.bytes, "file_bytes": on_disk, "by_space": stats.by_space}))
            return EXIT_OK
        print(f"cache {cache.path}{'' if settings.cache else ' (not used: SIGNAL_HUB_CACHE is off)'}")
        print(f"{stats.entries:,} entries, {format_bytes(stats.bytes)} of vectors, {format_bytes(on_disk)} on disk")
        for space, entries in stats.by_space.items():
            print(f"{entries:>12,}  {space}")
        return EXIT_OK
    finally:
        anyio.run(service.aclose)


def format_bytes(size: int) -> str:
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size:,} B" if unit == "B" else f"{value:,.1f} {unit}"
