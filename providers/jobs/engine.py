"""How a job's chunks become vectors: the engine seam, and the in-process engine.

```python
engine = InProcessEngine(job_settings(settings))   # its own EmbeddingService, built on first use
await engine.run(EngineJob("job-1", "local", space), chunks, writer, tally, on_progress)
```

Other engines implement `JobEngine` too: `build_engine("batch-api" | "ray", ...)` makes the OpenAI
Batch API one (`batch_api/job_engine.py`) and the Ray Data one (`ray_engine/job_engine.py`), found by name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from providers.base import EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback
from providers.errors import InputError
from providers.jobs.files import Chunk
from providers.jobs.files import windows as window_chunks
from providers.jobs.pipeline import Pipeline, Tally
from providers.jobs.writers import VectorWriter
from providers.local_model.encoders import usable_cores
from providers.service.facade import EmbeddingService
from providers.settings import Settings

__all__ = ["ENGINES", "EngineJob", "EngineName", "InProcessEngine", "JobEngine", "build_engine", "job_settings"]

EngineName = Literal["in-process", "batch-api", "ray"]
ENGINES: tuple[str, ...] = get_args(EngineName)

REMOTE_WINDOW, REMOTE_IN_FLIGHT = 256, 4
"""A window of 256 chunks is one or two API requests; 4 in flight keep requests flowing (the
`embed` command's measurements)."""
LOCAL_WINDOW, LOCAL_IN_FLIGHT = 16, 2
"""Small windows for the local model: a cancel lands within one, and the cache commits often."""


@dataclass(frozen=True)
class EngineJob:
    """What an engine needs to know of a job."""

    id: str
    """Stable across resumes: an engine may keep its own state under it (e.g. a remote batch's id)."""
    provider: str
    space: str
    """Every vector written must be of this space."""
    window: int | None = None
    """Chunks per call; None: the engine's default."""
    input_type: InputType = "document"
    """What the chunks are embedded as; `space` names it where the provider tells the types apart."""


class JobEngine(Protocol):
    """Runs the embedding of a job: the seam where other engines (a Batch API, a cluster) plug in.

    `run` must write every chunk's vector with `writer.write` in input order and count it in
    `tally`; it is cancelled (anyio) to stop the job, and what it finished must stay cached.
    """

    def provider(self, name: str | None) -> EmbeddingProvider:
        """The provider (and so the vector space) a job naming `name` gets."""

    async def run(
        self,
        job: EngineJob,
        chunks: Iterable[Chunk],
        writer: VectorWriter,
        tally: Tally,
        on_progress: Callable[[int], None],
    ) -> None: ...

    async def aclose(self) -> None: ...


def job_settings(settings: Settings) -> Settings:
    """Settings of the service that runs jobs: no fallback, and the local model leaves a core free."""
    threads = settings.local_threads or max(1, usable_cores() - 1)
    return dataclasses.replace(
        settings, fallback=dataclasses.replace(settings.fallback, mode="never"), local_threads=threads
    )


class InProcessEngine:
    """Embeds in this process with an `EmbeddingService`: cache, ledger and budget as for any call.

    Give it a service, or settings to build one from on first use (a server that never runs a job
    never builds it).
    """

    def __init__(self, service: EmbeddingService | Settings) -> None:
        self._service = service if isinstance(service, EmbeddingService) else None
        self._settings = service if isinstance(service, Settings) else service.settings

    @property
    def service(self) -> EmbeddingService:
        if self._service is None:
            self._service = EmbeddingService(settings=self._settings)
        return self._service

    def provider(self, name: str | None) -> EmbeddingProvider:
        return self.service.get_provider(name)

    async def run(
        self,
        job: EngineJob,
        chunks: Iterable[Chunk],
        writer: VectorWriter,
        tally: Tally,
        on_progress: Callable[[int], None],
    ) -> None:
        local = self.provider(job.provider).name == "local"
        size, in_flight = (LOCAL_WINDOW, LOCAL_IN_FLIGHT) if local else (REMOTE_WINDOW, REMOTE_IN_FLIGHT)
        size = job.window or size

        async def embed(texts: list[str], progress: ProgressCallback) -> EmbeddingResult:
            return await self.service.embed(texts, input_type=job.input_type, provider=job.provider, progress=progress)

        batches = window_chunks(chunks, size, self.service.settings.limits.max_total_chars)
        try:
            pipeline = Pipeline(embed, writer, tally, in_flight=in_flight, space=job.space, on_progress=on_progress)
            await pipeline.run(batches)
        finally:
            batches.close()

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.aclose()


_ENGINE_MODULES = {"batch-api": "providers.batch_api.job_engine", "ray": "providers.ray_engine.job_engine"}
"""Where each engine other than in-process lives: looked up by name, so the seam imports none of them."""


def build_engine(
    name: str,
    settings: Settings,
    providers: Callable[[str | None], EmbeddingProvider],
    *,
    ray_address: str | None = None,
    actors: int | None = None,
    poll_s: float | None = None,
    wait: bool = True,
) -> JobEngine:
    """The `batch-api` or `ray` engine, its providers (and so vector spaces) from `providers`.

    Each engine's module has a `build_engine(settings, providers, **options)` of its own; the
    options it does not use it ignores.
    """
    module = _ENGINE_MODULES.get(name)
    if module is None:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}.")
    build: Callable[..., JobEngine] = importlib.import_module(module).build_engine
    return build(settings, providers, ray_address=ray_address, actors=actors, poll_s=poll_s, wait=wait)
