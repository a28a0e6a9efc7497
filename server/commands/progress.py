"""The `embed` command's progress bar, its other lines and its summary on stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from providers.jobs.pipeline import Tally
from server.wording import count
from server.wording import format_usd as _usd

__all__ = ["cost_text", "format_seconds", "format_usd", "progress_bar", "say", "showing_notices", "summary"]

PROG = "signal-hub-embeddings"
NOTICES = ("providers.local_model.onnx_export",)
"""Loggers whose INFO lines a person at the terminal should see: the first ONNX export takes ~20 s."""


def say(message: str, *, prefix: str = f"{PROG}: ") -> None:
    """A line on stderr, above the progress bar rather than onto its line."""
    tqdm.write(f"{prefix}{message}", file=sys.stderr)


class _Notice(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say(record.getMessage())


@contextmanager
def showing_notices(names: tuple[str, ...] = NOTICES) -> Iterator[None]:
    """While the block runs, the core's INFO lines from `names` are said (not logged with a level)."""
    handler = _Notice(logging.INFO)
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)
        logger.propagate = False  # said once, not also by the root handler
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def summary(tally: Tally, seconds: float) -> str:
    return (
        f"embedded {tally.embedded:,}, cached {tally.cached:,}, failed {tally.failed:,}; "
        f"{count(tally.tokens, 'token')}, {cost_text(tally)}; {format_seconds(seconds)}"
    )


def cost_text(tally: Tally) -> str:
    return format_usd(tally.usd) + (" + unpriced tokens" if tally.unpriced else "")


def progress_bar(total: int | None, *, enabled: bool) -> tqdm[None]:
    """Items, rate, ETA and cost so far on stderr: redrawn in place on a terminal, else a line every 10 s."""
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc="embedding",
        unit="chunk",
        file=sys.stderr,
        disable=not enabled,
        mininterval=0.1 if tty else 10.0,
        dynamic_ncols=tty,
        ascii=not tty,
    )


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_usd(usd: float) -> str:
    return _usd(usd, places=4 if usd >= 0.01 else 6)
