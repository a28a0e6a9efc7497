"""One call in one provider's space: each distinct text once, cached texts not at all, the rest paid for.

`EmbeddingService` decides which provider answers (fallback, circuit breakers); this embeds with
the one it chose: it reads the cache, has `billing.Keeper` embed and pay for what is missing, and
settles the whole call in the ledger in one transaction, so the hard limit never has a gap.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import anyio
import anyio.to_thread
import numpy as np

from providers.base import EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback
from providers.cost import CostEstimate, batch_cost_usd, cost_usd, price_per_million
from providers.settings import Settings
from providers.storage.billing import Keeper, Recorded
from providers.storage.cache import CachedVector, EmbeddingCache
from providers.storage.ledger import CostLedger, Reservation

__all__ = ["SpaceCall"]


@dataclass(frozen=True)
class SpaceCall:
    """Embeds texts with one chosen provider, through the cache, the budget and the ledger."""

    ledger: CostLedger
    cache: EmbeddingCache | None
    settings: Settings

    async def embed(
        self,
        chosen: EmbeddingProvider,
        valid: list[str],
        progress: ProgressCallback | None,
        *,
        input_type: InputType = "document",
        hits: dict[str, CachedVector] | None = None,
    ) -> EmbeddingResult:
        """Embed with one provider: each distinct text once, cached texts (`hits`, if already read) not at all."""
        unique = list(dict.fromkeys(valid))
        if hits is None:
            await chosen.resolve_space()
            hits = await self._cached(chosen, unique, input_type)
        missing = [text for text in unique if text not in hits]

        fresh, reservation, recorded = await self._fresh(
            chosen, missing, progress, input_type, done_before=len(unique) - len(missing)
        )
        if not missing:
            # Wholly cached: no provider answered, so the space is the provider's, named in full
            # (the endpoint too): a cached answer must name the space a fresh one would.
            fresh = dataclasses.replace(
                fresh,
                provider=chosen.name,
                model=chosen.model,
                normalized=chosen.normalized,
                endpoint=chosen.endpoint,
            )
        by_text = {text: (hit.vector, hit.dropped_tokens) for text, hit in hits.items()}
        by_text.update((text, (fresh.vectors[i], fresh.truncated.get(i, 0))) for i, text in enumerate(missing))
        vectors = np.stack([by_text[text][0] for text in valid]).astype(np.float32, copy=False)
        truncated = {i: by_text[text][1] for i, text in enumerate(valid) if by_text[text][1]}
        cached = sum(1 for text in valid if text in hits)
        # Counting tokens of cached texts is work too: only for a provider that charges for them.
        priced = price_per_million(chosen.name, chosen.model, self.settings) != 0
        saved = await self.estimate(chosen, [text for text in valid if text in hits]) if cached and priced else None
        result = dataclasses.replace(
            fresh,
            vectors=vectors,
            truncated=truncated,
            cached=cached,
            duplicates=len(valid) - len(unique),
        )
        # One transaction swaps the reservation for the reported cost: the hard limit never has a gap.
        # What each completed request recorded already is not recorded twice.
        rest = dataclasses.replace(
            result,
            tokens=result.tokens - recorded.tokens,
            requests=result.requests - recorded.requests,
            cost_usd=None if result.cost_usd is None else max(0.0, result.cost_usd - recorded.usd),
        )
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                functools.partial(
                    self.ledger.settle,
                    reservation,
                    rest,
                    cached=cached,
                    saved_usd=(saved and saved.usd) or 0.0,
                    embeddings=result.count - recorded.embeddings,
                )
            )
        return result

    async def _fresh(
        self,
        chosen: EmbeddingProvider,
        texts: list[str],
        progress: ProgressCallback | None,
        input_type: InputType,
        *,
        done_before: int,
    ) -> tuple[EmbeddingResult, Reservation, Recorded]:
        """Embed texts the cache did not have, within the budget; see `billing.Keeper.embed_fresh`."""
        estimate = await self.estimate(chosen, texts)

        async def report(done: int, total: int) -> None:
            if progress is not None:
                await progress(done_before + done, done_before + total)

        keeper = Keeper(self.ledger, self.cache, self.settings)
        return await keeper.embed_fresh(chosen, texts, estimate, report, input_type)

    async def _cached(
        self, chosen: EmbeddingProvider, texts: list[str], input_type: InputType
    ) -> dict[str, CachedVector]:
        if self.cache is None:
            return {}
        space = chosen.space_for(input_type)  # each input type has its own cache entries
        return await anyio.to_thread.run_sync(self.cache.get_many, space, texts, chosen.dimensions)

    async def all_cached(
        self, chosen: EmbeddingProvider, texts: list[str], input_type: InputType = "document"
    ) -> dict[str, CachedVector] | None:
        """The cached vectors of `texts` when the cache has every one of them, else None."""
        unique = list(dict.fromkeys(texts))
        hits = await self._cached(chosen, unique, input_type)
        return hits if self.cache is not None and len(hits) == len(unique) else None

    async def estimate(self, provider: EmbeddingProvider, texts: list[str]) -> CostEstimate:
        tokens = await provider.estimate_tokens(texts)
        return CostEstimate(
            provider=provider.name,
            model=provider.model,
            texts=len(texts),
            tokens=tokens,
            usd=cost_usd(provider.name, provider.model, tokens, self.settings),
            batch_usd=batch_cost_usd(provider.name, provider.model, tokens, self.settings),
        )
