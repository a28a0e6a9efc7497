"""`GET /metrics` of the HTTP server: Prometheus text from `prometheus-client`, every name `signal_hub_`.

Tool calls are counted as they pass (`ToolMetrics`, an MCP server middleware); everything else is
read from the service when Prometheus scrapes: this session's ledger totals (embeddings, tokens,
USD, cache hits), 429s received, each provider's circuit and the jobs' progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.types import CallToolResult
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from providers import EmbeddingService
from providers.jobs.runner import JobRunner
from providers.remote.engine import RATE_LIMITED

__all__ = ["ServiceCollector", "ToolMetrics", "metrics_registry"]

# Latency buckets from a cached one-text call (milliseconds) to a 2,048-text batch (minutes).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_CIRCUITS = ("closed", "half_open", "open", "unavailable")
_JOBS_SHOWN = 20


class ToolMetrics(ServerMiddleware[Any]):
    """Counts `tools/call` by tool and status (`ok`, `error`) and times each call."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "signal_hub_tool_calls", "Tool calls answered, by tool and status.", ["tool", "status"], registry=registry
        )
        self.seconds = Histogram(
            "signal_hub_tool_call_seconds", "Time to answer a tool call.", ["tool"], buckets=_BUCKETS, registry=registry
        )

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = ctx.params.get("name") if ctx.params else None
        tool = name if isinstance(name, str) else "?"
        started = time.perf_counter()
        status = "error"
        try:
            result = await call_next(ctx)
            failed = isinstance(result, CallToolResult) and result.is_error
            failed = failed or (isinstance(result, dict) and result.get("isError") is True)
            status = "error" if failed else "ok"
            return result
        finally:
            self.calls.labels(tool, status).inc()
            self.seconds.labels(tool).observe(time.perf_counter() - started)


class ServiceCollector(Collector):
    """What the service has done and how it stands, read at each scrape."""

    def __init__(self, service: EmbeddingService, runner: Callable[[], JobRunner | None]) -> None:
        self._service = service
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        report = self._service.cost_report()  # this server's session: every client's calls
        families = {
            "embeddings": CounterMetricFamily(
                "signal_hub_embeddings", "Texts embedded (cache hits included).", labels=["provider"]
            ),
            "tokens": CounterMetricFamily("signal_hub_tokens", "Tokens sent to providers.", labels=["provider"]),
            "usd": CounterMetricFamily(
                "signal_hub_usd", "USD spent, from the usage providers report.", labels=["provider"]
            ),
            "cached": CounterMetricFamily(
                "signal_hub_cache_hits", "Texts answered from the cache.", labels=["provider"]
            ),
        }
        for provider, usage in report.by_provider.items():
            for field, family in families.items():
                family.add_metric([provider], float(getattr(usage, field)))
        yield from families.values()
        rate_limited = CounterMetricFamily(
            "signal_hub_rate_limited_responses", "429 answers received from providers.", labels=["provider"]
        )
        for provider, count in sorted(RATE_LIMITED.items()):
            rate_limited.add_metric([provider], float(count))
        yield rate_limited
        yield self._circuits()
        yield from self._jobs()

    def _circuits(self) -> Metric:
        circuit = GaugeMetricFamily(
            "signal_hub_circuit_state", "1 for the state each provider's circuit is in.", labels=["provider", "state"]
        )
        for status in self._service.provider_statuses():
            for state in _CIRCUITS:
                circuit.add_metric([status.name, state], 1.0 if status.circuit == state else 0.0)
        return circuit

    def _jobs(self) -> Iterator[Metric]:
        done = GaugeMetricFamily("signal_hub_job_done", "Chunks a job has embedded.", labels=["job_id", "status"])
        total = GaugeMetricFamily("signal_hub_job_total", "Chunks in a job.", labels=["job_id", "status"])
        runner = self._runner()
        for job in runner.list(_JOBS_SHOWN) if runner is not None else ():
            done.add_metric([job.id, job.status], float(job.done))
            total.add_metric([job.id, job.status], float(job.total))
        yield done
        yield total


def metrics_registry() -> CollectorRegistry:
    """A registry of our own: each server (and each test) counts apart from the others."""
    return CollectorRegistry(auto_describe=True)
