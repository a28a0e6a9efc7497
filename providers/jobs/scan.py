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
from providers.cost import batch_cost_usd, cost_usd
from providers.errors import InputError
from providers.jobs.files import DuplicateIds, Invalid
from providers.jobs.repository import JobInput
from providers.settings import InputLimits, Settings

__all__ = ["DryRun", "InputScan", "scan_input"]

TOP_DIRECTORIES = 10


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

    def report(self, settings: Settings) -> dict[str, object]:
        """The dry run's answer: counts, tokens, both prices (OpenAI), where the tokens are, what changed."""
        totals = self.totals
        usd = cost_usd(self.provider, self.model, totals.tokens, settings)
        batch = batch_cost_usd(self.provider, self.model, totals.tokens, settings)
        return {
            "dry_run": True,
            "provider": self.provider,
            "model": self.model,
            "space": self.space,
            "files": totals.files,
            "chunks": totals.chunks,
            "to_embed": totals.to_embed,
            "tokens": totals.tokens,
            "usd": None if usd is None else round(usd, 6),
            "batch_usd": None if batch is None else round(batch, 6),
            "chunk_tokens": None if self.budget is None else self.budget.max_tokens,
            "top_directories": totals.top_directories(TOP_DIRECTORIES),
            "skipped": dict(self.job_input.skipped.most_common()),
            "changes": self.job_input.changes.to_json() if self.job_input.run.previous is not None else None,
        }


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
