"""The `embed` command's progress bar and summary on stderr."""

from __future__ import annotations

import sys

from tqdm import tqdm

from providers.jobs.pipeline import Tally

__all__ = ["cost_text", "format_seconds", "format_usd", "progress_bar", "summary"]


def summary(tally: Tally, seconds: float) -> str:
    return (
        f"embedded {tally.embedded:,}, cached {tally.cached:,}, failed {tally.failed:,}; "
        f"{tally.tokens:,} tokens, {cost_text(tally)}; {format_seconds(seconds)}"
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
    return "$0.00" if usd == 0 else f"${usd:,.4f}" if usd >= 0.01 else f"${usd:.6f}"
