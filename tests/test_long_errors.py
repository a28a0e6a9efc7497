"""A provider's long error body never makes an answer pass the 2,000-token budget.

Issue 24, medium 10: with a 500 carrying a 200 KB message and a fallback to local, rank_texts
took 50,095 cl100k tokens, embed_text 50,145, list_providers 50,204, and list_jobs (10 jobs x 5
errors) 4,070: the whole body went into `fallback_reason` and `last_error`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from providers import Settings
from providers.errors import ProviderUnavailableError
from providers.jobs.store import MAX_ERRORS, JobStore
from providers.openai import OpenAIOptions
from server import build_server
from server.tools.budget import ANSWER_TOKEN_BUDGET, answer_json, answer_tokens
from tests.loopback_hostile import Answer, LoopbackHostile, Request, json_body

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WAIT = 120
# 200 KB of words that cost tokens, as a real error page or stack trace does.
LONG = " ".join(f"overloaded worker-{i} at shard {i % 97}" for i in range(6_000))[:200_000]


def failing(_: Request) -> Answer:
    return Answer(500, json_body({"error": {"message": LONG, "type": "server_error"}}))


@pytest.fixture
def server() -> Iterator[LoopbackHostile]:
    with LoopbackHostile(failing) as running:
        yield running


@pytest.fixture
async def client(settings: Settings, server: LoopbackHostile, project: Path) -> AsyncIterator[Client]:
    chosen = replace(
        settings,
        provider="openai",
        openai_api_key="sk-test-long-errors",
        openai_base_url=server.base_url,
        provider_options={"openai": OpenAIOptions(max_attempts=1)},
        vectors="on_request",  # as agents' hosts are configured: the budget is for those answers
    )
    async with Client(build_server(chosen), read_timeout_seconds=WAIT) as mcp:
        yield mcp


def tokens(result: Any) -> int:
    assert not result.is_error, result.content
    return answer_tokens(answer_json(result.structured_content))


async def test_a_200_kb_error_body_with_a_fallback_keeps_every_answer_within_the_budget(client: Client) -> None:
    with anyio.fail_after(WAIT):
        ranked = await client.call_tool("rank_texts", {"query": "a handler", "texts": ["def f(): pass", "x = 1"]})
        embedded = await client.call_tool("embed_text", {"text": "def g(): pass"})
        providers = await client.call_tool("list_providers", {})
    assert ranked.structured_content["fallback"] and "answered 500" in ranked.structured_content["fallback_reason"]
    assert embedded.structured_content["fallback"]
    [openai] = [p for p in providers.structured_content["providers"] if p["provider"] == "openai"]
    assert "answered 500" in openai["last_error"] and "characters cut" in openai["last_error"]
    for result in (ranked, embedded, providers):
        assert tokens(result) <= ANSWER_TOKEN_BUDGET  # 50,095, 50,145 and 50,204 before


async def test_list_jobs_with_ten_jobs_of_five_long_errors_stays_within_the_budget(
    settings: Settings, client: Client
) -> None:
    store = JobStore(settings.resolved_data_dir / "jobs.sqlite3")
    values = dict(input="i", output="o", format="jsonl", glob="*", provider="openai", model="m", space="s")
    for _ in range(10):
        job = store.create(**values, fingerprint="f", total=1)
        for n in range(MAX_ERRORS):
            store.add_error(job.id, str(ProviderUnavailableError(f"OpenAI answered 500 (try {n}): {LONG}")))
    store.close()
    with anyio.fail_after(WAIT):
        listed = await client.call_tool("list_jobs", {})
    assert tokens(listed) <= ANSWER_TOKEN_BUDGET  # 4,070 before
    shown = listed.structured_content
    assert 0 < len(shown["jobs"]) < 10 and shown["more"].startswith(f"and {10 - len(shown['jobs'])} older job")
    assert all(len(job["errors"]) == MAX_ERRORS for job in shown["jobs"])
    assert json.dumps(shown).count("answered 500") == MAX_ERRORS * len(shown["jobs"])
