"""The streaming pipeline of a job: windows of chunks in, vectors out in input order, memory flat.

```python
tally = Tally()
await Pipeline(embed, writer, tally, in_flight=4, space=provider.space).run(windows(chunks, 256, max_chars))
```

`embed(texts)` is one call of an engine (the in-process `EmbeddingService.embed` by default); every
finished request (and local model call) is in the cache, so a job killed and run again sends only
what is left, and the tally's tokens and USD count each one as the ledger records it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import numpy as np

from providers.base import EmbeddingResult, ProgressCallback
from providers.errors import EmbeddingError, InputError
from providers.jobs.files import Chunk
from providers.jobs.writers import VectorWriter
from providers.storage.billing import on_billed

__all__ = ["Billed", "EmbedCall", "Pipeline", "Tally"]

EmbedCall = Callable[[list[str], ProgressCallback], Awaitable[EmbeddingResult]]
"""Embeds distinct texts (reporting progress) and returns their vectors in order."""


@dataclass
class Tally:
    """What a job has done so far: every count its status and the `embed` summary report."""

    embedded: int = 0
    """Texts the provider embedded in this run."""
    cached: int = 0
    """Chunks answered without the provider: from the cache, or repeating a text embedded earlier in the run."""
    failed: int = 0
    """Chunks with no vector: bad records skipped, and chunks a failure left undone."""
    tokens: int = 0
    usd: float = 0.0
    unpriced: bool = False
    truncated: int = 0
    """Chunks longer than the model's window, cut to it."""
    dropped_tokens: int = 0
    """Tokens the model never saw, over all truncated chunks."""
    duplicate_ids: int = 0

    @property
    def written(self) -> int:
        return self.embedded + self.cached

    def add(
        self, result: EmbeddingResult | None, *, rows: int, sent: int, dropped: list[int], billed: Billed | None = None
    ) -> None:
        """Count a window of `rows` chunks that sent `sent` distinct texts (none: `result` is None).

        `billed`: what `bill` already counted of this window's call, piece by piece.
        """
        embedded = 0 if result is None else sent - result.cached
        self.embedded += embedded
        self.cached += rows - embedded
        self.truncated += sum(1 for lost in dropped if lost)
        self.dropped_tokens += sum(dropped)
        if result is not None:
            billed = billed or Billed()
            self.tokens += max(result.tokens - billed.tokens, 0)
            self.unpriced = self.unpriced or result.cost_usd is None
            self.usd += max((result.cost_usd or 0.0) - billed.usd, 0.0)

    def bill(self, piece: EmbeddingResult, billed: Billed) -> None:
        """Count a piece of a call (one request) as the ledger records it, before its window is written."""
        billed.tokens += piece.tokens
        billed.usd += piece.cost_usd or 0.0
        self.tokens += piece.tokens
        self.usd += piece.cost_usd or 0.0
        self.unpriced = self.unpriced or piece.cost_usd is None


@dataclass
class Billed:
    """What the pieces of one call recorded so far."""

    tokens: int = 0
    usd: float = 0.0


@dataclass(eq=False)
class _Slot:
    """One window on its way through the pipeline."""

    window: list[Chunk]
    texts: list[str] = field(default_factory=list)
    """What this window sends: each text once, without texts an earlier window in flight sends."""
    rows: list[tuple[_Slot, int]] = field(default_factory=list)
    """For each chunk, the window whose result holds its vector, and the row there."""
    done: anyio.Event = field(default_factory=anyio.Event)
    progress: int = 0
    result: EmbeddingResult | None = None
    error: Exception | None = None
    billed: Billed = field(default_factory=Billed)


class Pipeline:
    """Keeps `in_flight` windows with the engine and writes them in input order as they complete.

    Windows in flight together keep a remote provider's requests flowing across window boundaries
    and let writing overlap embedding. A text that an earlier window in flight already sends is not
    sent again but takes that window's vector: a repeated chunk is embedded once, as it would be
    with one call at a time (the second call finding it in the cache).
    """

    def __init__(
        self,
        embed: EmbedCall,
        writer: VectorWriter,
        tally: Tally,
        *,
        in_flight: int,
        space: str,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.embed = embed
        self.writer = writer
        self.tally = tally
        self.in_flight = in_flight
        self.space = space
        self.on_progress = on_progress
        self._pending: deque[_Slot] = deque()
        self._sending: dict[str, tuple[_Slot, int]] = {}
        self._bad_input: InputError | None = None

    async def run(self, batches: Iterable[list[Chunk]]) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:
            try:
                for window in self._until_bad_input(batches):
                    slot = self._plan(window)
                    self._pending.append(slot)
                    tasks.start_soon(self._embed, slot)
                    if len(self._pending) >= self.in_flight:
                        await self._write_next()
                # After bad input too: the windows in flight are good work, and get into the cache.
                while self._pending:
                    await self._write_next()
            except Exception as exc:  # a failed call or write: stop the windows in flight
                failure = exc
                tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if self._bad_input is not None:
            raise self._bad_input

    def _until_bad_input(self, batches: Iterable[list[Chunk]]) -> Iterator[list[Chunk]]:
        try:
            yield from batches
        except InputError as exc:  # a bad line of stdin, found as it is read
            self._bad_input = exc

    def _plan(self, window: list[Chunk]) -> _Slot:
        slot = _Slot(window)
        for chunk in window:
            source = self._sending.get(chunk.text)
            if source is None:
                source = self._sending[chunk.text] = (slot, len(slot.texts))
                slot.texts.append(chunk.text)
            slot.rows.append(source)
        return slot

    async def _embed(self, slot: _Slot) -> None:
        async def progress(done: int, total: int) -> None:
            slot.progress = len(slot.window) * done // max(total, 1)
            self._show()

        def billed(piece: EmbeddingResult) -> None:
            self.tally.bill(piece, slot.billed)
            self._show()  # so the job's saved tokens and USD keep up with the ledger's

        try:
            if slot.texts:
                with on_billed(billed):
                    slot.result = await self.embed(slot.texts, progress)
                if slot.result.space != self.space:
                    raise EmbeddingError(f"{slot.result.space} answered, not {self.space}: two spaces in one file.")
        except Exception as exc:
            slot.error = exc
        finally:
            slot.done.set()

    async def _write_next(self) -> None:
        slot = self._pending[0]
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        rows, dropped = [], []
        for source, row in slot.rows:
            assert source.result is not None  # it sends this text and is written first
            rows.append(source.result.vectors[row])
            dropped.append(source.result.truncated.get(row, 0))
        vectors = np.stack(rows)
        ids = [chunk.id for chunk in slot.window]
        await anyio.to_thread.run_sync(self.writer.write, ids, vectors, dropped)
        self._pending.popleft()
        for text in slot.texts:
            del self._sending[text]
        self.tally.add(slot.result, rows=len(slot.window), sent=len(slot.texts), dropped=dropped, billed=slot.billed)
        slot.rows.clear()  # later windows may still read this one's result, but nothing older stays alive
        self._show()

    def _show(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.tally.written + sum(slot.progress for slot in self._pending))
