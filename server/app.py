"""The MCP adapter: four tools over one `EmbeddingService`, built in the server's lifespan."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from providers import EmbeddingError, EmbeddingResult, EmbeddingService, Settings
from providers.base import ProgressCallback

from .encoding import Encoding, check_message_size, encode_vectors
from .job_tools import register_job_tools, run_jobs
from .models import (
    CostEstimateResult,
    CostResult,
    EmbedBatchResult,
    EmbedTextResult,
    ProviderInfo,
    ProviderRef,
    ProvidersResult,
    SwitchProviderResult,
    TruncatedText,
    UsageOut,
)

__all__ = ["build_server"]

ProviderName = Literal["local", "openai"]

INSTRUCTIONS = """\
Text embeddings for semantic code search. embed_text embeds one text; embed_batch embeds many
in one call (vectors in input order). Vectors from different `space` ids must never be mixed in
one index: a result with `fallback: true` came from another provider than the one asked for.
switch_provider changes the provider for later calls; list_providers shows each provider's space
and health; get_cost reports the spend; estimate_cost prices a job without running it."""

ServiceFactory = Callable[[Settings], EmbeddingService]


def build_server(settings: Settings, service_factory: ServiceFactory | None = None) -> MCPServer[EmbeddingService]:
    """An MCP server whose tools embed with `service_factory(settings)` (default: `EmbeddingService`)."""
    make_service = service_factory or (lambda s: EmbeddingService(settings=s))

    @asynccontextmanager
    async def lifespan(_: MCPServer[EmbeddingService]) -> AsyncIterator[EmbeddingService]:
        # The service is cheap to build: models and API clients load on first use.
        async with make_service(settings) as service, run_jobs(service, settings):
            yield service

    mcp: MCPServer[EmbeddingService] = MCPServer(
        "signal-hub-embeddings", instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING"
    )

    @mcp.tool()
    async def embed_text(
        text: Annotated[str, Field(description="The text (e.g. a code chunk) to embed.")],
        ctx: Context,
        provider: Annotated[ProviderName | None, Field(description="Provider for this call only.")] = None,
        encoding: Annotated[Encoding, Field(description="'float' list or 'base64' float32.")] = "float",
    ) -> Annotated[CallToolResult, EmbedTextResult]:
        """Embed one text and return its vector."""
        result = await _embed(ctx, [text], provider, encoding)
        dropped = result.truncated.get(0, 0)
        out = EmbedTextResult(
            embedding=encode_vectors(result.vectors, encoding)[0],
            truncated=dropped > 0,
            dropped_tokens=dropped,
            **_meta(result, encoding),
        )
        return _answer(out, _summary(result, "1 text"))

    @mcp.tool()
    async def embed_batch(
        texts: Annotated[list[str], Field(description="Texts to embed; vectors come back in this order.")],
        ctx: Context,
        provider: Annotated[ProviderName | None, Field(description="Provider for this call only.")] = None,
        encoding: Annotated[Encoding, Field(description="'float' lists or 'base64' float32.")] = "float",
    ) -> Annotated[CallToolResult, EmbedBatchResult]:
        """Embed many texts in one call, reporting progress while it works."""

        async def progress(done: int, total: int) -> None:
            await ctx.report_progress(done, total, f"embedded {done} of {total} texts")

        result = await _embed(ctx, texts, provider, encoding, progress)
        out = EmbedBatchResult(
            embeddings=encode_vectors(result.vectors, encoding),
            count=result.count,
            truncated=[TruncatedText(index=i, dropped_tokens=n) for i, n in sorted(result.truncated.items())],
            **_meta(result, encoding),
        )
        return _answer(out, _summary(result, f"{result.count} texts"))

    @mcp.tool()
    async def switch_provider(
        provider: Annotated[ProviderName, Field(description="Provider for later calls.")],
        ctx: Context,
        model: Annotated[str | None, Field(description="Model name; default: the provider's default.")] = None,
        dimensions: Annotated[
            int | None, Field(description="Shorter vectors (OpenAI text-embedding-3 models only).", ge=1)
        ] = None,
    ) -> Annotated[CallToolResult, SwitchProviderResult]:
        """Change the provider (and model) later calls use. Vectors of different spaces must not be mixed."""
        try:
            switched = _service(ctx).switch_provider(provider, model, dimensions)
        except EmbeddingError as exc:
            raise ToolError(str(exc)) from exc
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
        )
        text = f"Now embedding in space {switched.space}; was {switched.previous_space}."
        if out.space_changed:
            text += " Vectors stored from the old space do not match new ones: keep them apart or re-embed."
        return _answer(out, text)

    @mcp.tool()
    async def list_providers(ctx: Context) -> Annotated[CallToolResult, ProvidersResult]:
        """Each provider with its model, vector space, health (circuit state, last error) and whether it is active."""
        statuses = _service(ctx).provider_statuses()
        out = ProvidersResult(
            providers=[
                ProviderInfo(
                    provider=st.name,
                    model=st.model,
                    dimensions=st.dimensions,
                    space=st.space,
                    active=st.active,
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
        return _answer(out, text)

    @mcp.tool()
    async def get_cost(
        ctx: Context,
        scope: Annotated[
            Literal["session", "all"],
            Field(description="'session': this server's calls; 'all': every process sharing the ledger."),
        ] = "session",
        since: Annotated[
            datetime | None, Field(description="Only calls at or after this date/time (ISO 8601).")
        ] = None,
    ) -> Annotated[CallToolResult, CostResult]:
        """Spend in USD, with tokens, requests, embeddings and cache savings by provider and by model."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        report = _service(ctx).cost_report(scope=scope, since=since)
        out = CostResult(
            scope=scope,
            since=since,
            total_usd=report.total_usd,
            **vars(report.total),
            by_provider={name: UsageOut(**vars(u)) for name, u in report.by_provider.items()},
            by_model={name: UsageOut(**vars(u)) for name, u in report.by_model.items()},
        )
        parts = [
            f"{name}: {u.embeddings} embeddings, {u.tokens} tokens, ${u.usd:.6f}"
            for name, u in report.by_provider.items()
        ]
        return _answer(out, f"Total ${report.total_usd:.6f}" + (" (" + "; ".join(parts) + ")" if parts else ""))

    @mcp.tool()
    async def estimate_cost(
        texts: Annotated[list[str], Field(description="Texts that would be embedded.")],
        ctx: Context,
        provider: Annotated[ProviderName | None, Field(description="Default: the active provider.")] = None,
        model: Annotated[str | None, Field(description="Default: the provider's model.")] = None,
    ) -> Annotated[CallToolResult, CostEstimateResult]:
        """Tokens and USD a job would cost, without calling the provider (a dry run)."""
        try:
            estimate = await _service(ctx).estimate_cost(texts, provider, model)
        except EmbeddingError as exc:
            raise ToolError(str(exc)) from exc
        out = CostEstimateResult(**vars(estimate))
        usd = "price unknown" if estimate.usd is None else f"${estimate.usd:.6f}"
        return _answer(
            out, f"{estimate.texts} texts ≈ {estimate.tokens} tokens ≈ {usd} with {estimate.provider}/{estimate.model}."
        )

    register_job_tools(mcp)
    return mcp


def _service(ctx: Context) -> EmbeddingService:
    service = ctx.request_context.lifespan_context
    assert isinstance(service, EmbeddingService)
    return service


async def _embed(
    ctx: Context,
    texts: list[str],
    provider: str | None,
    encoding: Encoding,
    progress: ProgressCallback | None = None,
) -> EmbeddingResult:
    service = _service(ctx)
    try:
        result = await service.embed(
            texts,
            provider=provider,
            progress=progress,
            check_capacity=lambda count, dimensions: check_message_size(count, dimensions, encoding),
        )
    except EmbeddingError as exc:
        raise ToolError(str(exc)) from exc
    if result.warning:
        # Log notifications are deprecated from protocol 2026-07-28 on, but hosts on the
        # handshake-era protocol (and clients that opt in) still show them to the user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.warning(result.warning, logger_name="signal-hub-embeddings.budget")
    return result


def _meta(result: EmbeddingResult, encoding: Encoding) -> dict[str, Any]:
    return {
        "dimensions": result.dimensions,
        "provider": result.provider,
        "model": result.model,
        "space": result.space,
        "tokens": result.tokens,
        "cost_usd": result.cost_usd,
        "encoding": encoding,
        "cached": result.cached,
        "fallback": result.fallback,
        "fallback_reason": result.fallback_reason,
        "requested_space": result.requested_space,
        "warning": result.warning,
    }


def _summary(result: EmbeddingResult, what: str) -> str:
    cost = "price unknown" if result.cost_usd is None else f"${result.cost_usd:.6f}"
    text = (
        f"Embedded {what} with {result.provider}/{result.model}: {result.dimensions} dimensions, "
        f"{result.tokens} tokens, {cost}."
    )
    if result.cached:
        text += f" {result.cached} from the cache."
    if result.fallback:
        text += (
            f" FALLBACK: {result.fallback_reason}; these vectors are in space {result.space},"
            f" not {result.requested_space}."
        )
    if result.truncated:
        text += f" {len(result.truncated)} text(s) were longer than the model's window and were truncated."
    if result.warning:
        text += f" Warning: {result.warning}"
    return text + " Vectors are in the structured content."


def _answer(out: BaseModel, text: str) -> CallToolResult:
    """A short human summary as text; the vectors only in structured content, so agents are not flooded."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=out.model_dump())
