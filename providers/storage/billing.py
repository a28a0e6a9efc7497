"""Paying for fresh embeddings: within the budget, and every billed request kept as it completes.

A provider that reports each request (`embed_each`) has each one recorded in the ledger, its
cost taken off the call's reservation, and its vectors cached, as that request completes: a
process killed mid-call loses nothing it paid for, and a rerun sends only the rest. Code that
counts spend of its own (a job's `tokens` and `usd`) hears of each recorded piece at once:

```python
with on_billed(lambda piece: print(piece.tokens, piece.cost_usd)):
    await service.embed(texts)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import anyio
import anyio.to_thread
import numpy as np

from providers.base import EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback
from providers.cost import CostEstimate, cost_usd
from providers.errors import BudgetExceededError, ProviderError
from providers.settings import Settings
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger, Reservation

__all__ = ["Keeper", "Recorded", "on_billed"]

BillListener = Callable[[EmbeddingResult], None]
_LISTENER: ContextVar[BillListener | None] = ContextVar("bill_listener", default=None)


@contextmanager
def on_billed(listener: BillListener) -> Iterator[None]:
    """Call `listener(piece)` as each piece of a call in this context is recorded in the ledger (priced).

    The rest of a call, settled when it ends, is in its result: a listener counts only the pieces.
    """
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def _billed(piece: EmbeddingResult) -> None:
    listener = _LISTENER.get()
    if listener is not None:
        listener(piece)


@dataclass
class Recorded:
    """What the completed requests of one call recorded in the ledger so far."""

    tokens: int = 0
    requests: int = 0
    embeddings: int = 0
    usd: float = 0.0

    def add(self, piece: EmbeddingResult) -> None:
        self.tokens += piece.tokens
        self.requests += piece.requests
        self.embeddings += piece.count
        self.usd += piece.cost_usd or 0.0


@dataclass(frozen=True)
class Keeper:
    """Prices what a provider returns (the one place cost is computed), records it and caches it."""

    ledger: CostLedger
    cache: EmbeddingCache | None
    settings: Settings

    async def embed_fresh(
        self,
        chosen: EmbeddingProvider,
        texts: list[str],
        estimate: CostEstimate,
        progress: ProgressCallback,
        input_type: InputType = "document",
    ) -> tuple[EmbeddingResult, Reservation, Recorded]:
        """Embed `texts` within the budget; returns the priced result, its reservation (the caller
        settles it) and what the completed requests recorded already."""
        budget = self.settings.budget
        if estimate.usd is None and budget.hard_usd is not None:
            raise BudgetExceededError(
                f"the price of {estimate.model!r} is unknown, so the hard limit of ${budget.hard_usd} cannot be "
                f"enforced; give its price with SIGNAL_HUB_PRICES={estimate.model}=<USD per 1M tokens>."
            )
        reservation = await anyio.to_thread.run_sync(self.ledger.reserve, estimate.usd or 0.0, budget)
        recorded = Recorded()

        async def keep(indexes: list[int], piece: EmbeddingResult) -> None:
            priced = self.priced(piece)
            await anyio.to_thread.run_sync(self.ledger.record_part, reservation, priced)
            recorded.add(priced)
            _billed(priced)
            await self.cache_put(chosen, [texts[i] for i in indexes], piece, input_type)

        try:
            if texts:
                result = await chosen.embed_each(texts, input_type=input_type, progress=progress, on_request=keep)
            else:
                await progress(0, 0)
                empty = np.empty((0, chosen.dimensions), dtype=np.float32)
                result = EmbeddingResult(
                    vectors=empty,
                    provider=chosen.name,
                    model=chosen.model,
                    tokens=0,
                    requests=0,
                    normalized=chosen.normalized,
                    endpoint=chosen.endpoint,
                    qualifiers=chosen.space_qualifiers(input_type),
                )
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.ledger.release, reservation)
                if isinstance(exc, ProviderError) and exc.partial is not None and not recorded.requests:
                    await self.keep_partial(chosen, texts, exc, input_type)
            raise
        if not recorded.requests and texts:
            await self.cache_put(chosen, texts, result, input_type)
        # Cost comes from the usage the provider reported, never from our estimate.
        # A provider's own caveat (e.g. truncation unknown) and the budget's warning both reach the caller.
        warning = "; ".join(w for w in (result.warning, reservation.warning) if w) or None
        return dataclasses.replace(self.priced(result), warning=warning), reservation, recorded

    def priced(self, result: EmbeddingResult) -> EmbeddingResult:
        return dataclasses.replace(
            result, cost_usd=cost_usd(result.provider, result.model, result.tokens, self.settings)
        )

    async def cache_put(
        self, chosen: EmbeddingProvider, texts: list[str], result: EmbeddingResult, input_type: InputType
    ) -> None:
        if self.cache is None or not texts:
            return
        dropped = [result.truncated.get(i, 0) for i in range(len(texts))]
        with anyio.CancelScope(shield=True):
            space = chosen.space_for(input_type)  # a query vector is never served for a document
            await anyio.to_thread.run_sync(self.cache.put_many, space, texts, result.vectors, dropped)

    async def keep_partial(
        self, chosen: EmbeddingProvider, texts: list[str], error: ProviderError, input_type: InputType
    ) -> None:
        """Vectors paid for before a failure, from a provider that does not report each request: keep them."""
        partial = error.partial
        assert partial is not None
        priced = self.priced(partial)
        await anyio.to_thread.run_sync(self.ledger.record, priced)
        _billed(priced)
        await self.cache_put(chosen, [texts[i] for i in error.partial_indexes], partial, input_type)
