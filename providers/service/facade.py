"""`EmbeddingService`: the one facade the MCP server, the CLI and Python callers use."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import anyio
import anyio.to_thread

from providers.base import EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback
from providers.cost import CostEstimate, CostReport
from providers.errors import (
    ConfigurationError,
    EmbeddingError,
    InputError,
    ProviderUnavailableError,
)
from providers.fallback import OUTAGES, CircuitBreaker
from providers.registry import ProviderFactory, provider_specs
from providers.service.ranking import check_input_type, check_query, with_query, without_query
from providers.service.results import DuplicateTexts, ProviderStatus, RankedTexts, SpendTotals, SwitchResult
from providers.service.similarity import find_duplicate_groups, rank
from providers.service.space_call import SpaceCall
from providers.settings import Settings
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger, _period_start
from providers.text.validation import validate_texts

__all__ = [
    "PROVIDER_FACTORIES",
    "DuplicateTexts",
    "EmbeddingService",
    "ProviderFactory",
    "ProviderStatus",
    "RankedTexts",
    "SpendTotals",
    "SwitchResult",
]

logger = logging.getLogger(__name__)

PROVIDER_FACTORIES: Mapping[str, ProviderFactory] = {spec.name: spec.factory for spec in provider_specs()}
"""Every registered provider's factory by name (see `registry`)."""


class EmbeddingService:
    """Embeds texts with the active provider, records what each call cost, and enforces the budget.

    ```python
    service = EmbeddingService(provider="local")
    embedding = await service.generate("def calculate_total(items):")
    embeddings = await service.batch_generate(["chunk1", "chunk2"])
    print(service.get_cost())
    ```
    """

    def __init__(
        self,
        provider: str | None = None,
        model: str | None = None,
        *,
        settings: Settings | None = None,
        factories: Mapping[str, ProviderFactory] = PROVIDER_FACTORIES,
        ledger: CostLedger | None = None,
        cache: EmbeddingCache | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        # The Python API is an entry point too: without explicit settings, read the environment.
        self.settings = settings if settings is not None else Settings.from_env()
        self._factories = factories
        self._instances: dict[tuple[str, str | None, int | None], EmbeddingProvider] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._now = now
        self._active = self._provider(provider or self.settings.provider, model)
        data_dir = self.settings.resolved_data_dir
        self.ledger = ledger or CostLedger(data_dir / "ledger.sqlite3", session=self.settings.ledger_session)
        self.cache = cache or (EmbeddingCache(data_dir / "cache.sqlite3") if self.settings.cache else None)

    @property
    def provider(self) -> EmbeddingProvider:
        """The provider calls use unless they name another."""
        return self._active

    def get_provider(self, name: str | None = None, model: str | None = None) -> EmbeddingProvider:
        """The active provider, or the named one (with `model`, or its default model)."""
        name = self._active.name if name is None else name
        if name == self._active.name and model in (None, self._active.model):
            return self._active
        return self._provider(name, model)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        provider: str | None = None,
        progress: ProgressCallback | None = None,
        check_capacity: Callable[[int, int], None] | None = None,
    ) -> EmbeddingResult:
        """Validate, embed and account for `texts` as `input_type`; the result carries its cost.

        Each distinct text is embedded once; texts already in the cache for this vector space (and
        input type, where the provider tells them apart) are not sent at all.
        `check_capacity(count, dimensions)` may refuse the call (by raising) after the texts are
        validated and before any work is done, e.g. when the answer could not be delivered.
        """
        check_input_type(input_type)
        valid = validate_texts(texts, self.settings.limits)
        return await self._embed_valid(
            valid, input_type=input_type, provider=provider, progress=progress, check_capacity=check_capacity
        )

    async def _embed_valid(
        self,
        valid: list[str],
        *,
        input_type: InputType = "document",
        provider: str | None,
        progress: ProgressCallback | None,
        check_capacity: Callable[[int, int], None] | None,
    ) -> EmbeddingResult:
        primary = self.get_provider(provider)
        progress = _never_backwards(progress)
        if check_capacity is not None:
            check_capacity(len(valid), primary.dimensions)
        breaker = self._breaker(primary)
        fallbacks = self.settings.fallback.fallbacks_for(primary.name)
        if breaker.allows_request():
            try:
                result = await self._space_call().embed(primary, valid, progress, input_type=input_type)
            except OUTAGES as exc:
                breaker.record_failure(exc)
                if not fallbacks:
                    raise
                reason = f"{primary.name} failed: {exc}"
            else:
                if result.cached < result.count:  # the cache alone says nothing of the provider's health
                    breaker.record_success()
                return result
        elif (hits := await self._space_call().all_cached(primary, valid, input_type)) is not None:
            # The provider is down but has nothing to do: its own cached vectors answer, in its space.
            return await self._space_call().embed(primary, valid, progress, input_type=input_type, hits=hits)
        else:
            reason = (
                f"{primary.name} is unavailable after repeated failures (last: {breaker.last_error}); "
                f"it is tried again in {breaker.retry_in_s:.0f} s"
            )
            if not fallbacks:
                raise ProviderUnavailableError(f"{reason}. Retry later, or switch_provider to another provider.")
        return await self._fall_back(primary, fallbacks, reason, valid, progress, check_capacity, input_type)

    async def _fall_back(
        self,
        primary: EmbeddingProvider,
        fallbacks: Sequence[str],
        reason: str,
        texts: list[str],
        progress: ProgressCallback | None,
        check_capacity: Callable[[int, int], None] | None,
        input_type: InputType,
    ) -> EmbeddingResult:
        """Answer the whole call from the first working fallback: one call, one vector space."""
        for name in fallbacks:
            other = self.get_provider(name)
            breaker = self._breaker(other)
            if not breaker.allows_request():
                continue
            if check_capacity is not None:
                check_capacity(len(texts), other.dimensions)
            logger.warning("%s; answering from %s (%s)", reason, other.name, other.space)
            try:
                result = await self._space_call().embed(other, texts, progress, input_type=input_type)
            except OUTAGES as exc:
                breaker.record_failure(exc)
                reason = f"{reason}; {other.name} failed too: {exc}"
                continue
            if result.cached < result.count:
                breaker.record_success()
            requested = primary.space_for(input_type)
            return dataclasses.replace(result, fallback_reason=reason, requested_space=requested)
        raise ProviderUnavailableError(f"{reason}. No fallback provider could answer; retry later.")

    def _breaker(self, provider: EmbeddingProvider) -> CircuitBreaker:
        key = (provider.name, provider.model)
        if key not in self._breakers:
            policy = self.settings.fallback
            self._breakers[key] = CircuitBreaker(
                failure_threshold=policy.failure_threshold, cooldown_s=policy.cooldown_s, now=self._now
            )
        return self._breakers[key]

    def _space_call(self) -> SpaceCall:
        return SpaceCall(self.ledger, self.cache, self.settings)

    async def generate(self, text: str, *, input_type: InputType = "document") -> list[float]:
        """Embed one text (a search's text as `input_type="query"`)."""
        return (await self.batch_generate([text], input_type=input_type))[0]

    async def batch_generate(self, texts: Sequence[str], *, input_type: InputType = "document") -> list[list[float]]:
        """Embed texts; vectors come back in input order."""
        result = await self.embed(texts, input_type=input_type)
        return result.vectors.tolist()  # type: ignore[no-any-return]

    async def estimate_cost(
        self, texts: Sequence[str], provider: str | None = None, model: str | None = None
    ) -> CostEstimate:
        """Tokens and USD that embedding `texts` would cost, without calling the provider."""
        valid = validate_texts(texts, self.settings.limits)
        return await self._space_call().estimate(self.get_provider(provider, model), valid)

    def switch_provider(self, name: str, model: str | None = None, dimensions: int | None = None) -> SwitchResult:
        """Make `name` (with `model`, or its default model) the provider later calls use.

        Vectors of the new space do not match vectors stored from the old one: compare `space`s.
        """
        previous = self._active
        chosen = self._provider(name, model, dimensions)  # built and checked: a failed switch changes nothing
        switched = SwitchResult(
            provider=chosen.name,
            model=chosen.model,
            dimensions=chosen.dimensions,
            space=chosen.space,
            previous_provider=previous.name,
            previous_model=previous.model,
            previous_dimensions=previous.dimensions,
            previous_space=previous.space,
        )
        self._active = chosen
        return switched

    def provider_statuses(self) -> list[ProviderStatus]:
        """Each known provider (its active or default model), its space and health.

        A provider that cannot be built or read (a bad model directory, say) is listed with its own
        error: one broken provider never hides the others.
        """
        statuses = []
        for name in self._factories:  # the registry's providers, in its order
            try:
                provider = self.get_provider(name)
                dimensions, space = provider.dimensions, provider.space
            except Exception as exc:
                active = name == self._active.name
                error = str(exc) if isinstance(exc, EmbeddingError) else f"{type(exc).__name__}: {exc}"
                model = self._active.model if active else None
                statuses.append(ProviderStatus(name, model, None, None, active, "unavailable", error, 0.0))
                continue
            breaker = self._breaker(provider)
            statuses.append(
                ProviderStatus(
                    name=name,
                    model=provider.model,
                    dimensions=dimensions or None,  # 0: not learnt yet (compatible servers)
                    space=space if dimensions else None,
                    active=provider is self._active,
                    circuit=breaker.state.value,
                    last_error=breaker.last_error,
                    retry_in_s=round(breaker.retry_in_s, 3),
                    input_types=provider.input_types,
                )
            )
        return statuses

    def get_cost(self) -> float:
        """Total USD spent in this session."""
        return self.cost_report().total_usd

    def cost_report(self, *, scope: str = "session", since: datetime | None = None) -> CostReport:
        """Totals of this session ("session") or of every process that shares the ledger ("all")."""
        if scope not in ("session", "all"):
            raise ConfigurationError(f"cost scope {scope!r} is not 'session' or 'all'.")
        return self.ledger.report(session=self.ledger.session if scope == "session" else None, since=since)

    async def aclose(self) -> None:
        for instance in {id(i): i for i in self._instances.values()}.values():
            await instance.aclose()
        self._instances.clear()
        self.ledger.close()
        if self.cache is not None:
            self.cache.close()

    async def __aenter__(self) -> EmbeddingService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _provider(self, name: str, model: str | None, dimensions: int | None = None) -> EmbeddingProvider:
        key = name.strip().lower() if isinstance(name, str) else name
        factory = self._factories.get(key)
        if factory is None:
            raise ConfigurationError(f"unknown provider {name!r}; choose one of: {', '.join(self._factories)}.")
        cached = self._instances.get((key, model, dimensions))
        if cached is not None:
            return cached
        instance = factory(self.settings, model, dimensions)
        if not isinstance(instance, EmbeddingProvider):  # pragma: no cover - a factory bug, not user input
            raise EmbeddingError(f"provider factory {key!r} returned {type(instance).__name__}")
        instance.check()  # a provider that cannot work is never kept, made active or listed as usable
        # Reachable both by the name asked for (None: the default) and by the model it resolved to.
        self._instances[(key, model, dimensions)] = instance
        self._instances.setdefault((key, instance.model, dimensions), instance)
        return instance

    async def rank_texts(
        self,
        query: str,
        texts: Sequence[str],
        top_k: int = 10,
        *,
        provider: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> RankedTexts:
        """The `top_k` of `texts` most similar to `query` (cosine), best first.

        The candidates are embedded as documents and the query as a query, by the one provider
        that answered the candidates (fallback included), so both sides come from one model.
        """
        limits = self.settings.limits
        check_query(query, limits)
        valid = validate_texts(texts, limits)
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}.")
        if not self.get_provider(provider).input_types:
            # One call, as a query and a document are the same to this provider (the fallback's query is redone).
            both = await self._embed_valid([query, *valid], provider=provider, progress=progress, check_capacity=None)
            if not self.get_provider(both.provider, both.model).input_types:
                return RankedTexts(rank(both.vectors[0], both.vectors[1:], top_k), both)
            documents = without_query(both)
        else:
            documents = await self._embed_valid(valid, provider=provider, progress=progress, check_capacity=None)
        answering = self.get_provider(documents.provider, documents.model)
        asked = await self._space_call().embed(answering, [query], None, input_type="query")
        return RankedTexts(rank(asked.vectors[0], documents.vectors, top_k), with_query(documents, asked))

    async def find_duplicates(
        self,
        texts: Sequence[str],
        threshold: float = 0.95,
        *,
        provider: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> DuplicateTexts:
        """Groups of `texts` whose vectors score at least `threshold` (cosine) against another member."""
        valid = validate_texts(texts, self.settings.limits)
        if not -1.0 <= threshold <= 1.0:
            raise InputError(f"threshold is a cosine similarity between -1 and 1, got {threshold}; try 0.95.")
        result = await self._embed_valid(valid, provider=provider, progress=progress, check_capacity=None)
        found = await anyio.to_thread.run_sync(find_duplicate_groups, result.vectors, threshold)
        return DuplicateTexts(found, result)

    def spend_totals(self) -> SpendTotals:
        """This session's spend beside the budget period's and all time's, from the ledger every process shares."""
        period = self.settings.budget.period
        session = self.ledger.report(session=self.ledger.session).total_usd
        all_time = self.ledger.report().total_usd
        if period in ("session", "all"):
            in_period = session if period == "session" else all_time
        else:
            start = datetime.fromtimestamp(_period_start(period, time.time()), UTC)
            in_period = self.ledger.report(since=start).total_usd
        return SpendTotals(session, period, in_period, all_time)

    def key_warning(self, name: str) -> str | None:
        """Why calls to provider `name` will fail for want of an API key, or None (never shows a key)."""
        if name.strip().lower() == "openai" and not self.settings.openai_api_key:
            return (
                "no OpenAI API key is set (OPENAI_API_KEY): calls will fail, or fall back to another provider, "
                "until the server is restarted with the key in its environment."
            )
        return None


def _never_backwards(progress: ProgressCallback | None) -> ProgressCallback | None:
    """Progress that only goes up (MCP requires it), even when a fallback starts the call over."""
    if progress is None:
        return None
    reported = -1.0

    async def forward(done: int, total: int) -> None:
        nonlocal reported
        if done > reported:
            reported = done
            await progress(done, total)

    return forward
