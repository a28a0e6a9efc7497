"""A server's ledger session is one: what its jobs and Batch API engine spend counts against the session budget.

Issue 24, medium 7: with SIGNAL_HUB_BUDGET_PERIOD=session and a $0.05 hard limit, an interactive
call spent $0.032 and the next was refused; then a job in the same server spent another $0.032.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from providers import EmbeddingService, Settings
from providers.batch_api.entry import batch_engine
from providers.compatible import CompatibleOptions
from providers.settings import Budget
from server import build_server
from tests.loopback_compatible import LoopbackCompatible

pytestmark = pytest.mark.anyio

WAIT = 60


def text(word: str) -> str:
    """32 words of one token each: the loopback bills 32 tokens, $0.032 at $1,000 per 1M tokens."""
    return " ".join([word] * 32)


@pytest.fixture
def tei() -> Iterator[LoopbackCompatible]:
    with LoopbackCompatible("tei", dimensions=8) as server:
        yield server


def session_budget(settings: Settings, server: LoopbackCompatible) -> Settings:
    options = CompatibleOptions(base_url=server.base_url, model="m", dimensions=8, price=1_000.0)
    return replace(
        settings,
        provider="compatible",
        provider_options={"compatible": options},
        budget=Budget(hard_usd=0.05, period="session"),
    )


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    return result


@pytest.mark.parametrize("built", ["in the lifespan", "before the server, as `serve` does"])
async def test_a_job_is_refused_once_the_servers_session_spent_its_budget(
    settings: Settings, tei: LoopbackCompatible, project: Path, built: str
) -> None:
    source = project / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": text("file")}) + "\n")
    chosen = session_budget(settings, tei)
    if built == "in the lifespan":
        server = build_server(chosen)
    else:
        service = EmbeddingService(settings=chosen)
        server = build_server(chosen, lambda _: service)
    async with Client(server, read_timeout_seconds=WAIT) as client:
        with anyio.fail_after(WAIT):
            first = await call(client, "embed_text", text=text("data"))
            assert not first.is_error and first.structured_content["cost_usd"] == pytest.approx(0.032)
            refused = await call(client, "embed_text", text=text("code"))
            assert refused.is_error and "hard limit" in refused.content[0].text

            started = await call(client, "start_embedding_job", input=str(source), output="out.jsonl")
            assert not started.is_error, started.content
            job_id = started.structured_content["job_id"]
            while (status := (await call(client, "job_status", job_id=job_id)).structured_content)["status"] in (
                "queued",
                "running",
            ):
                await anyio.sleep(0.05)
            cost = (await call(client, "get_cost")).structured_content
    assert status["status"] == "failed" and "hard limit" in " ".join(status["errors"]), status
    assert cost["session_usd"] == pytest.approx(0.032)  # the job spent nothing: $0.064 before
    assert tei.tokens_served == 32


def test_the_batch_api_engine_records_in_the_settings_session(settings: Settings) -> None:
    chosen = replace(settings, openai_api_key="sk-test-session", ledger_session="server-session")
    engine = batch_engine(chosen)
    try:
        assert engine.ledger is not None and engine.ledger.session == "server-session"
    finally:
        engine.state.close()
        engine.cache.close()
        assert engine.ledger is not None
        engine.ledger.close()
