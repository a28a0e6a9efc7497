"""Reading a job's input before it is queued: counts, tokens and repeated ids; and the dry run.

```python
scan = scan_input(job_input, settings.limits)
scan.totals.chunks, scan.totals.tokens, scan.duplicates
```
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.chunking.budget import TokenBudget
from providers.chunking.totals import InputTotals
from providers.errors import InputError
from providers.jobs.files import DuplicateIds, Invalid
from providers.jobs.repository import JobInput
from providers.settings import InputLimits

__all__ = ["DryRun", "InputScan", "scan_input"]


@dataclass(frozen=True)
class InputScan:
    totals: InputTotals
    duplicates: str | None
    """A warning when ids repeat in the input."""
    job_input: JobInput


@dataclass(frozen=True)
class DryRun:
    """What a job would embed and cost; nothing is queued or sent."""

    totals: InputTotals
    job_input: JobInput
    provider: str
    model: str
    space: str
    budget: TokenBudget | None


def scan_input(job_input: JobInput, limits: InputLimits) -> InputScan:
    """Read the whole input once; a bad record refuses the job."""

    def invalid(item: Invalid) -> None:
        raise InputError(f"{item}. Fix it and start the job again.")

    duplicates = DuplicateIds()
    try:
        totals = job_input.totals(limits, invalid, lambda chunk: duplicates.add(chunk.id))
        return InputScan(totals, duplicates.describe() if duplicates.count else None, job_input)
    finally:
        duplicates.close()
