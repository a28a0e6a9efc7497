"""The MCP adapter: tools over one `EmbeddingService`, built in the server's lifespan.

Each tool validates, calls the service and shapes the answer; failures are explained by
`AgentServer` (server/tools/registration.py) for every tool at once. `build_server` is the one place tools
are registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from providers import EmbeddingResult, EmbeddingService, Settings
from providers.base import InputType, ProgressCallback
from providers.registry import provider_names
from providers.service.similarity import preview
from server.tools.answers import answer, call_meta, dump, embedding_meta, summary
from server.tools.budget import fit_items
from server.tools.client_log import send_log
from server.tools.encoding import Encoding, check_message_size, encode_vectors
from server.tools.instructions import instructions
from server.tools.jobs import register_job_tools, run_jobs
from server.tools.models import (
    CostEstimateResult,
    CostResult,
    DuplicateGroup,
    DuplicatesResult,
    EmbedBatchResult,
    EmbedTextResult,
    ProviderInfo,
    ProviderRef,
    ProvidersResult,
    RankedText,
    RankResult,
    SwitchProviderResult,
    TruncatedText,
    UsageOut,
)
from server.tools.registration import AgentServer, add_tool
from server.wording import count, format_usd

__all__ = ["build_server", "instructions"]

# The registry's provider names: the tool schema lists them (mypy sees a plain str).
if TYPE_CHECKING:
    ProviderName = str
else:
    ProviderName = Literal[provider_names()]

ServiceFactory = Callable[[Settings], EmbeddingService]

ProviderArg = Annotated[ProviderName | None, Field(description="For this call only.")]
IncludeVectors = Annotated[
    bool | None, Field(description="Return vectors (default: SIGNAL_HUB_VECTORS); ~2,800 tokens each as floats.")
]
EncodingArg = Annotated[Encoding, Field(description="'base64' (float32) takes half the tokens of 'float'.")]
InputTypeArg = Annotated[
    InputType, Field(description="'query' for what a search looks for; 'document': what is searched.")
]


def build_server(settings: Settings, service_factory: ServiceFactory | None = None) -> MCPServer[EmbeddingService]:
    """An MCP server whose tools embed with `service_factory(settings)` (default: `EmbeddingService`)."""
    make_service = service_factory or (lambda s: EmbeddingService(settings=s))

    @asynccontextmanager
    async def lifespan(_: MCPServer[EmbeddingService]) -> AsyncIterator[EmbeddingService]:
        # The service is cheap to build: models and API clients load on first use.
        async with make_service(settings) as service:
            # One ledger session for the server: what its jobs and batches spend counts as its own.
            jobs = dataclasses.replace(settings, ledger_session=service.ledger.session)
            async with run_jobs(service, jobs):
                yield service

    mcp: MCPServer[EmbeddingService] = AgentServer(
        "signal-hub-embeddings",
        instructions=instructions(settings.vectors),
        lifespan=lifespan,
        log_level="WARNING",
        secrets=lambda: (settings.openai_api_key,),
    )
    add_tool(mcp, rank_texts, title="Rank texts by similarity", open_world=True)
    add_tool(mcp, find_duplicates, title="Find near-duplicate texts", open_world=True)
    add_tool(mcp, embed_text, title="Embed one text", open_world=True)
    add_tool(mcp, embed_batch, title="Embed many texts", open_world=True)
    add_tool(mcp, estimate_cost, title="Estimate cost", read_only=True)
    add_tool(mcp, get_cost, title="Show spend", read_only=True)
    add_tool(mcp, list_providers, title="List providers", read_only=True)
    add_tool(mcp, switch_provider, title="Switch provider")
    register_job_tools(mcp)
    return mcp


async def rank_texts(
    query: Annotated[str, Field(description="What to look for.")],
    texts: Annotated[list[str], Field(description="Candidates, up to 2,048.")],
    ctx: Context,
    top_k: Annotated[int, Field(ge=1)] = 10,
    provider: ProviderArg = None,
) -> CallToolResult:
    """Rank texts by meaning against a query, best first (index, cosine score, preview).
    Use it to find which snippets match what you need; it returns no vectors."""
    ranked = await _service(ctx).rank_texts(query, texts, top_k, provider=provider, progress=_progress(ctx))
    await _warn(ctx, ranked.embedding)
    shown = [
        RankedText(index=r.index, score=round(r.score, 4), preview=preview(texts[r.index])) for r in ranked.results
    ]

    def build(k: int) -> dict[str, Any]:
        more = f"and {len(shown) - k} more results: ask for a smaller top_k" if k < len(shown) else None
        out = RankResult(results=shown[:k], candidates=len(texts), more=more, **call_meta(ranked.embedding))
        return dump(out, lean=True)

    structured = await anyio.to_thread.run_sync(fit_items, build, len(shown))
    best = f"; best #{shown[0].index} ({shown[0].score})" if shown else ""
    return answer(structured, f"Ranked {count(len(texts), 'text')}{best}.")


async def find_duplicates(
    texts: Annotated[list[str], Field(description="Up to 2,048.")],
    ctx: Context,
    threshold: Annotated[float, Field(ge=-1, le=1, description="Cosine similarity of near-copies.")] = 0.95,
    provider: ProviderArg = None,
) -> CallToolResult:
    """Group near-duplicate texts (cosine >= threshold), e.g. copies differing in whitespace or names.
    Use it to de-duplicate snippets; answers groups of indexes, largest first."""
    found = await _service(ctx).find_duplicates(texts, threshold, provider=provider, progress=_progress(ctx))
    await _warn(ctx, found.embedding)
    groups = found.duplicates.groups
    sizes = [len(group.indexes) for group in groups]

    def build(shown_indexes: int) -> dict[str, Any]:
        """Whole groups while `shown_indexes` lasts; the group it runs out in shows what is left of it."""
        shown, left = [], shown_indexes
        for group in groups:
            if left <= 0:
                break
            shown.append(
                DuplicateGroup(
                    indexes=list(group.indexes[:left]), size=len(group.indexes), min_score=round(group.min_score, 4)
                )
            )
            left -= len(group.indexes)
        notes = []
        if len(shown) < len(groups):
            notes.append(f"and {count(len(groups) - len(shown), 'more group')}: raise threshold or pass fewer texts.")
        if shown and len(shown[-1].indexes) < shown[-1].size:
            notes.append(f"the group of {shown[-1].size} shows {len(shown[-1].indexes)} of its indexes.")
        more = " ".join(notes) or None
        out = DuplicatesResult(
            groups=shown,
            texts=len(texts),
            pairs_checked=found.duplicates.pairs_checked,
            threshold=threshold,
            more=more,
            **call_meta(found.embedding),
        )
        return dump(out, lean=True)

    structured = await anyio.to_thread.run_sync(fit_items, build, sum(sizes))
    said = f"{count(len(groups), 'group')} of near-duplicates among {count(len(texts), 'text')}."
    return answer(structured, said)


async def embed_text(
    text: str,
    ctx: Context,
    provider: ProviderArg = None,
    encoding: EncodingArg = "float",
    include_vectors: IncludeVectors = None,
    input_type: InputTypeArg = "document",
) -> Annotated[CallToolResult, EmbedTextResult]:
    """Embed one text into a vector, for programs that store vectors.
    To compare texts use rank_texts or find_duplicates instead."""
    with_vectors = _with_vectors(ctx, include_vectors)
    result = await _embed(ctx, [text], provider, encoding if with_vectors else None, input_type=input_type)
    dropped = result.truncated.get(0, 0)
    out = EmbedTextResult(
        embedding=encode_vectors(result.vectors, encoding)[0] if with_vectors else None,
        truncated=dropped > 0,
        dropped_tokens=dropped,
        vectors_included=with_vectors,
        **embedding_meta(result, encoding),
    )
    return answer(out.model_dump(exclude=None if with_vectors else {"embedding"}), summary(result, "1 text"))


async def embed_batch(
    texts: Annotated[list[str], Field(description="Up to 2,048; vectors come back in this order.")],
    ctx: Context,
    provider: ProviderArg = None,
    encoding: EncodingArg = "float",
    include_vectors: IncludeVectors = None,
    input_type: InputTypeArg = "document",
) -> Annotated[CallToolResult, EmbedBatchResult]:
    """Embed many texts into vectors, for programs that index them (progress is reported).
    Without vectors it warms the cache and prices the job; to compare texts use rank_texts."""
    with_vectors = _with_vectors(ctx, include_vectors)
    result = await _embed(ctx, texts, provider, encoding if with_vectors else None, _progress(ctx), input_type)
    truncated = [TruncatedText(index=i, dropped_tokens=n) for i, n in sorted(result.truncated.items())]
    said = summary(result, count(result.count, "text"))
    if with_vectors:  # programs read every field: nothing is cut
        out = EmbedBatchResult(
            embeddings=encode_vectors(result.vectors, encoding),
            count=result.count,
            truncated=truncated,
            **embedding_meta(result, encoding),
        )
        return answer(out.model_dump(exclude={"more"}), said)

    def build(k: int) -> dict[str, Any]:
        more = f"and {len(truncated) - k} more truncated texts" if k < len(truncated) else None
        out = EmbedBatchResult(
            count=result.count,
            truncated=truncated[:k],
            vectors_included=False,
            more=more,
            **embedding_meta(result, encoding),
        )
        return out.model_dump(exclude={"embeddings"} if more else {"embeddings", "more"})

    return answer(await anyio.to_thread.run_sync(fit_items, build, len(truncated)), said)


async def switch_provider(
    provider: ProviderName,
    ctx: Context,
    model: Annotated[str | None, Field(description="Default: the provider's.")] = None,
    dimensions: Annotated[int | None, Field(description="Shorter vectors (text-embedding-3 only).", ge=1)] = None,
) -> Annotated[CallToolResult, SwitchProviderResult]:
    """Change the provider (and model) of later calls; for one call, pass its `provider` instead.
    Never mix vectors of two spaces: after a space change, re-embed stored vectors."""
    service = _service(ctx)
    switched = service.switch_provider(provider, model, dimensions)
    out = SwitchProviderResult(
        provider=switched.provider,
        model=switched.model,
        dimensions=switched.dimensions,
        space=switched.space,
        previous=ProviderRef(
            provider=switched.previous_provider,
            model=switched.previous_model,
            dimensions=switched.previous_dimensions,
            space=switched.previous_space,
        ),
        space_changed=switched.space != switched.previous_space,
        warning=service.key_warning(switched.provider),
    )
    text = f"Now embedding in space {switched.space}; was {switched.previous_space}."
    if out.space_changed:
        text += " Vectors stored from the old space do not match new ones: keep them apart or re-embed."
    if out.warning:
        text += f" Warning: {out.warning}"
    return answer(dump(out, lean=True), text)


async def list_providers(ctx: Context) -> CallToolResult:
    """Each provider's model, vector space, health and whether it is active.
    Use it before switch_provider, or to see why calls fall back."""
    statuses = _service(ctx).provider_statuses()
    out = ProvidersResult(
        providers=[
            ProviderInfo(
                provider=st.name,
                model=st.model,
                dimensions=st.dimensions,
                space=st.space,
                active=st.active,
                input_types=st.input_types,
                circuit=st.circuit,  # type: ignore[arg-type]
                last_error=st.last_error,
                retry_in_s=st.retry_in_s,
            )
            for st in statuses
        ]
    )
    text = "; ".join(
        f"{st.name}{' (active)' if st.active else ''}: {st.space or 'unavailable'}, circuit {st.circuit}"
        for st in statuses
    )
    return answer(dump(out), text)


async def get_cost(
    ctx: Context,
    scope: Annotated[
        Literal["session", "all"], Field(description="'all': every process, not just this one.")
    ] = "session",
    since: Annotated[datetime | None, Field(description="Only calls from then on (ISO 8601).")] = None,
) -> CallToolResult:
    """Spend in USD of this session, the budget period and all time, by provider and model.
    To price a job before running it use estimate_cost."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    service = _service(ctx)
    report = service.cost_report(scope=scope, since=since)
    totals = service.spend_totals()
    out = CostResult(
        scope=scope,
        since=since,
        total_usd=report.total_usd,
        session_usd=totals.session_usd,
        period=totals.period,
        period_usd=totals.period_usd,
        all_time_usd=totals.all_time_usd,
        **vars(report.total),
        by_provider={name: UsageOut(**vars(u)) for name, u in report.by_provider.items()},
        by_model={name: UsageOut(**vars(u)) for name, u in report.by_model.items()},
        by_client={name: UsageOut(**vars(u)) for name, u in report.by_client.items()},
    )
    parts = [
        f"{name}: {count(u.embeddings, 'embedding')}, {count(u.tokens, 'token')}, {format_usd(u.usd)}"
        for name, u in report.by_provider.items()
    ]
    text = f"Total {format_usd(report.total_usd)}" + (" (" + "; ".join(parts) + ")" if parts else "")
    text += (
        f". Session {format_usd(totals.session_usd)}, this {totals.period} {format_usd(totals.period_usd)}, "
        f"all time {format_usd(totals.all_time_usd)}."
    )
    return answer(dump(out), text)


async def estimate_cost(
    texts: list[str],
    ctx: Context,
    provider: Annotated[ProviderName | None, Field(description="Default: the active one.")] = None,
    model: Annotated[str | None, Field(description="Default: the provider's.")] = None,
) -> CallToolResult:
    """Price a job without running it (tokens, USD): nothing is sent or spent.
    For money already spent use get_cost."""
    estimate = await _service(ctx).estimate_cost(texts, provider, model)
    usd = "price unknown" if estimate.usd is None else format_usd(estimate.usd)
    batch = "" if estimate.batch_usd is None else f" ({format_usd(estimate.batch_usd)} through the Batch API)"
    said = f"{count(estimate.texts, 'text')} ≈ {count(estimate.tokens, 'token')} ≈ {usd}{batch}"
    return answer(
        dump(CostEstimateResult(**vars(estimate)), lean=True), f"{said} with {estimate.provider}/{estimate.model}."
    )


def _service(ctx: Context) -> EmbeddingService:
    service = ctx.request_context.lifespan_context
    assert isinstance(service, EmbeddingService)
    return service


def _with_vectors(ctx: Context, include_vectors: bool | None) -> bool:
    return _service(ctx).settings.vectors == "inline" if include_vectors is None else include_vectors


def _progress(ctx: Context) -> ProgressCallback:
    async def progress(done: int, total: int) -> None:
        await ctx.report_progress(done, total, f"embedded {done} of {total} texts")

    return progress


async def _embed(
    ctx: Context,
    texts: list[str],
    provider: str | None,
    encoding: Encoding | None,
    progress: ProgressCallback | None = None,
    input_type: InputType = "document",
) -> EmbeddingResult:
    """Embed `texts`; with an `encoding`, first check the vectors' answer can be delivered."""
    check = None if encoding is None else (lambda count, dimensions: check_message_size(count, dimensions, encoding))
    service = _service(ctx)
    result = await service.embed(
        texts, input_type=input_type, provider=provider, progress=progress, check_capacity=check
    )
    await _warn(ctx, result)
    return result


async def _warn(ctx: Context, result: EmbeddingResult) -> None:
    if result.warning:
        await send_log(ctx, "warning", result.warning, logger_name="signal-hub-embeddings.budget")
