"""The engines a job runner runs its jobs with, built on first use, and what it asks them beyond running.

```python
engines = RunnerEngines(settings, InProcessEngine(job_settings(settings)))
engines.named("batch-api").provider(None)
engines.status(job)                 # a Batch API job's batches (no remote call), else None
await engines.cancel_remote(job)    # a Batch API job's remote batches
```
"""

from __future__ import annotations

import anyio

from providers.errors import InputError
from providers.jobs.engine import ENGINES, JobEngine, build_engine, job_settings
from providers.jobs.store import JobRecord
from providers.settings import Settings

__all__ = ["RunnerEngines"]


class RunnerEngines:
    def __init__(self, settings: Settings, engine: JobEngine, engines: dict[str, JobEngine] | None = None) -> None:
        self.settings = settings
        self.default = engine
        self._engines: dict[str, JobEngine] = {"in-process": engine, **(engines or {})}

    def named(self, name: str) -> JobEngine:
        """The engine of that name (`ENGINES`), built on first use with the in-process engine's providers."""
        if name not in self._engines:
            if name not in ENGINES:
                raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}.")
            self._engines[name] = build_engine(name, job_settings(self.settings), self.default.provider)
        return self._engines[name]

    def status(self, job: JobRecord) -> dict[str, object] | None:
        """What the job's engine reports beyond the counts: a Batch API job's batches (no remote call)."""
        status = getattr(self.named(job.engine), "status", None) if job.engine == "batch-api" else None
        found = status(job.id, job.model) if status is not None else None
        if found is None:
            return None
        from providers.batch_api.job_engine import batch_summary

        return batch_summary(found)

    async def cancel_remote(self, job: JobRecord) -> None:
        if job.engine != "batch-api":
            return
        cancel = getattr(self.named(job.engine), "cancel", None)
        if cancel is not None:
            with anyio.CancelScope(shield=True):
                await cancel(job.id, job.model)

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
