"""The callable class Ray Data runs in each actor: our local provider, built once, embedding batches.

It imports nothing from Ray, so it runs (and is tested) in a plain process as well. Each actor
keeps one event loop in a thread (an anyio blocking portal) for the provider's async API, loads
the model when it starts (checked weights; int8 ONNX on a CPU, torch on a GPU when Ray gave the
actor one) and reports its peak memory with every batch.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import socket
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import numpy.typing as npt
from anyio.from_thread import BlockingPortal, start_blocking_portal

from providers.local import LocalProvider
from providers.settings import Settings

__all__ = ["EmbedBatch"]

Batch = dict[str, npt.NDArray[Any]]


class EmbedBatch:
    """`map_batches` callable: {row, shard, text} in; {row, shard, vector, truncated, ...} out."""

    def __init__(self, settings: Settings, threads: int | None = None) -> None:
        # Only the local model's settings travel to the actor; an API key has no business there.
        settings = dataclasses.replace(settings, openai_api_key=None, local_threads=threads)
        self._portal_context: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_context.__enter__()
        try:
            self.provider = self._portal.call(_build_provider, settings)
            self._portal.call(self.provider.embed, ["def warm_up(): pass"])
        except BaseException:
            self.close()
            raise
        runtime = self.provider.runtime
        assert runtime is not None  # loaded by the warm-up call
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.runtime = f"{runtime.backend} on {runtime.device}, {runtime.threads} thread(s)"

    def __call__(self, batch: Batch) -> Batch:
        texts = [str(text) for text in batch["text"]]
        result = self._portal.call(self.provider.embed, texts)
        count = len(texts)
        truncated = np.zeros(count, dtype=np.int32)
        for index, dropped in result.truncated.items():
            truncated[index] = dropped
        tokens = np.zeros(count, dtype=np.int64)
        tokens[:1] = result.tokens  # the batch's tokens on its first row, so a sum over rows is exact
        peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "row": batch["row"],
            "shard": batch["shard"],
            "vector": result.vectors,
            "truncated": truncated,
            "tokens": tokens,
            "worker": np.full(count, self.worker),
            "runtime": np.full(count, self.runtime),
            "peak_rss_kb": np.full(count, peak_rss_kb, dtype=np.int64),
        }

    def close(self) -> None:
        self._portal_context.__exit__(None, None, None)


async def _build_provider(settings: Settings) -> LocalProvider:
    # Built inside the portal's event loop, where its locks will be used.
    return LocalProvider.from_settings(settings)
