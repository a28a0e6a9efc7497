"""The MCP tools, through a real `mcp.Client` connected in memory."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import numpy as np
import pytest
from mcp import Client

from providers import Budget, EmbeddingProvider, EmbeddingService, Settings
from providers.registry import provider_names
from server import build_server
from tests.fakes import FakeProvider

pytestmark = pytest.mark.anyio

TOOLS = {
    "embed_text",
    "embed_batch",
    "rank_texts",
    "find_duplicates",
    "switch_provider",
    "get_cost",
    "estimate_cost",
    "list_providers",
}
TOOLS |= {"start_embedding_job", "job_status", "cancel_job", "list_jobs", "resume_job"}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings), read_timeout_seconds=120) as client:
        yield client


def fake_server(settings: Settings, dimensions: int = 8):
    def factory(_: Settings, model: str | None, _dimensions: int | None) -> EmbeddingProvider:
        return FakeProvider(model or "fake-small", dimensions=dimensions)

    return build_server(settings, lambda s: EmbeddingService("fake", settings=s, factories={"fake": factory}))


def decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


async def test_lists_the_tools_with_input_schemas_and_output_schemas_for_programs(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    assert tools["embed_batch"].input_schema["required"] == ["texts"]
    assert set(tools["embed_batch"].output_schema["required"]) >= {
        "count",
        "dimensions",
        "provider",
        "model",
        "tokens",
        "cost_usd",
    }
    assert set(tools["embed_text"].output_schema["required"]) >= {
        "dimensions",
        "provider",
        "model",
        "tokens",
        "cost_usd",
    }
    assert set(tools["switch_provider"].output_schema["required"]) >= {"provider", "model", "dimensions", "previous"}
    # Agent-only answers carry no output schema: agents pay for tools/list on every turn.
    assert {name for name, tool in tools.items() if tool.output_schema} == {
        "embed_text",
        "embed_batch",
        "switch_provider",
    }
    assert all(tool.description for tool in tools.values())


async def test_the_batch_schema_types_each_vector_not_each_number(client: Client) -> None:
    # Clients validate answers against outputSchema: a schema item per float costs them more than embedding.
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    vectors = tools["embed_batch"].output_schema["properties"]["embeddings"]
    assert vectors["type"] == "array"
    assert vectors["items"] == {"anyOf": [{"type": "array"}, {"type": "string"}]}  # no `type` array: portable


async def test_embed_text_returns_a_normalised_vector_and_a_short_summary(client: Client) -> None:
    result = await client.call_tool("embed_text", {"text": "def calculate_total(items):"})
    assert not result.is_error
    out = result.structured_content
    assert (out["dimensions"], out["provider"], out["model"]) == (384, "local", "all-MiniLM-L6-v2")
    assert out["space"] == "local:all-MiniLM-L6-v2:384:l2"
    assert out["cost_usd"] == 0.0 and out["tokens"] == 10 and out["truncated"] is False and out["cached"] == 0
    assert np.linalg.norm(out["embedding"]) == pytest.approx(1.0, abs=1e-5)
    text = result.content[0].text
    assert "384 dimensions" in text and len(text) < 300  # no floats flooding the agent's context


async def test_base64_and_float_encodings_carry_the_same_vectors(client: Client) -> None:
    texts = ["alpha", "def beta(): pass", "gamma ray"]
    floats = (await client.call_tool("embed_batch", {"texts": texts})).structured_content
    packed = (await client.call_tool("embed_batch", {"texts": texts, "encoding": "base64"})).structured_content
    assert floats["count"] == packed["count"] == 3
    assert packed["encoding"] == "base64"
    for as_float, as_b64 in zip(floats["embeddings"], packed["embeddings"], strict=True):
        np.testing.assert_array_equal(np.asarray(as_float, dtype=np.float32), decode(as_b64))


async def test_embed_batch_keeps_input_order(client: Client) -> None:
    texts = ["SELECT * FROM users", "def f(): pass", "the cat sat"]
    batch = (await client.call_tool("embed_batch", {"texts": texts})).structured_content["embeddings"]
    for text, vector in zip(texts, batch, strict=True):
        one = (await client.call_tool("embed_text", {"text": text})).structured_content["embedding"]
        np.testing.assert_allclose(one, vector, atol=1e-5)


async def test_embed_batch_sends_progress_notifications(client: Client) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    texts = [f"chunk {i}" for i in range(40)]
    result = await client.call_tool("embed_batch", {"texts": texts}, progress_callback=on_progress)
    assert not result.is_error
    assert [(p, t) for p, t, _ in seen] == [(done, 40) for done in (8, 16, 24, 32, 40)]  # steps of 8 windows
    assert seen[-1][2] == "embedded 40 of 40 texts"


async def test_long_texts_are_reported_as_truncated(client: Client) -> None:
    out = (await client.call_tool("embed_batch", {"texts": ["short", "token " * 300]})).structured_content
    assert out["truncated"] == [{"index": 1, "dropped_tokens": 302 - 256}]


BAD_CALLS = [
    ("embed_batch", {"texts": []}, "texts is empty"),
    ("embed_batch", {"texts": ["ok", "   "]}, "whitespace-only text at position 1"),
    ("embed_batch", {"texts": ["ok", 7]}, "texts.1"),
    ("embed_batch", {"texts": "not a list"}, "texts"),
    ("embed_batch", {"texts": ["x"] * 2049}, "the limit is 2048"),
    ("embed_batch", {"texts": ["x" * 100_001]}, "longer than 100,000 characters"),
    ("embed_text", {"text": ""}, "whitespace-only"),
    ("embed_text", {"text": "x", "provider": "anthropic"}, "Input should be 'local'"),
    ("embed_text", {"text": "x", "encoding": "hex"}, "'float' or 'base64'"),
    ("switch_provider", {"provider": "nope"}, "Input should be 'local'"),
    ("switch_provider", {"provider": "local", "model": "/etc/passwd"}, "unknown local model '/etc/passwd'"),
    ("switch_provider", {"provider": "openai", "model": "gpt-4o"}, "gpt-4o"),
]


@pytest.mark.parametrize(("tool", "arguments", "message"), BAD_CALLS)
async def test_bad_input_is_a_tool_error_and_the_server_keeps_serving(
    client: Client, tool: str, arguments: dict, message: str
) -> None:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert message in result.content[0].text
    assert not (await client.call_tool("get_cost", {})).is_error
    assert not (await client.call_tool("get_cost", {})).is_error


async def test_an_answer_too_big_for_one_message_is_refused_with_how_to_split(settings: Settings) -> None:
    async with Client(fake_server(settings, dimensions=3072)) as client:
        result = await client.call_tool("embed_batch", {"texts": [f"t{i}" for i in range(200)]})
        assert result.is_error
        text = result.content[0].text
        assert "Send at most 129 texts per call or use encoding='base64' (up to 607 texts per call)" in text
        ok = await client.call_tool("embed_batch", {"texts": [f"t{i}" for i in range(200)], "encoding": "base64"})
        assert not ok.is_error and ok.structured_content["count"] == 200


async def test_switch_provider_answers_old_and_new_and_later_calls_follow(client: Client) -> None:
    result = await client.call_tool("switch_provider", {"provider": "local", "model": "all-MiniLM-L6-v2"})
    space = "local:all-MiniLM-L6-v2:384:l2"
    assert result.structured_content == {
        "provider": "local",
        "model": "all-MiniLM-L6-v2",
        "dimensions": 384,
        "space": space,
        "previous": {"provider": "local", "model": "all-MiniLM-L6-v2", "dimensions": 384, "space": space},
        "space_changed": False,
    }


async def test_get_cost_breaks_the_session_down_by_provider_and_model(client: Client) -> None:
    await client.call_tool("embed_batch", {"texts": ["a b", "c"]})
    await client.call_tool("embed_text", {"text": "d"})
    out = (await client.call_tool("get_cost", {})).structured_content
    assert out["total_usd"] == 0.0
    assert out["embeddings"] == 3 and out["requests"] == 2
    local = out["by_provider"]["local"]
    assert (local["embeddings"], local["requests"], local["usd"]) == (3, 2, 0.0)
    assert out["by_model"]["all-MiniLM-L6-v2"]["tokens"] == local["tokens"] == out["tokens"] > 0


async def test_the_server_answers_other_requests_while_it_embeds(client: Client) -> None:
    first_step = anyio.Event()
    finished = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first_step.set()

    async def embed() -> None:
        texts = [f"def function_{i}(x):\n    return x * {i} + helper(x)\n" * 6 for i in range(160)]
        await client.call_tool("embed_batch", {"texts": texts}, progress_callback=on_progress)
        finished.set()

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(embed)
            await first_step.wait()
            assert not (await client.call_tool("get_cost", {})).is_error
            assert not finished.is_set()  # answered mid-batch


def priced_fake_server(settings: Settings, **budget: float):
    settings = replace(
        settings, prices={"fake-small": 1_000_000.0}, budget=Budget(period="all", **budget)
    )  # $1 a token
    return fake_server(settings)


async def test_estimate_cost_is_a_dry_run(settings: Settings) -> None:
    async with Client(priced_fake_server(settings)) as client:
        out = (await client.call_tool("estimate_cost", {"texts": ["abcdef", "xyz"]})).structured_content
        assert out == {"provider": "fake", "model": "fake-small", "texts": 2, "tokens": 5, "usd": 5.0}
        cost = (await client.call_tool("get_cost", {})).structured_content
        assert cost["requests"] == 0
        bad = await client.call_tool("estimate_cost", {"texts": [" "]})
        assert bad.is_error and "position 0" in bad.content[0].text


async def test_the_soft_limit_warns_in_the_result_and_in_a_log_message(settings: Settings) -> None:
    logged: list[str] = []

    async def on_log(params) -> None:  # type: ignore[no-untyped-def]
        logged.append(params.data)

    async with Client(
        priced_fake_server(settings, soft_usd=1.0), logging_callback=on_log, log_level="warning"
    ) as client:
        result = await client.call_tool("embed_text", {"text": "one two"})
        assert "soft limit" in result.structured_content["warning"]
        assert "Warning:" in result.content[0].text
    assert len(logged) == 1 and "soft limit of $1.000000" in logged[0]


async def test_the_hard_limit_is_a_tool_error_naming_limit_and_spend(settings: Settings) -> None:
    async with Client(priced_fake_server(settings, hard_usd=3.0)) as client:
        assert not (await client.call_tool("embed_text", {"text": "one two"})).is_error
        refused = await client.call_tool("embed_text", {"text": "three four five six"})
        assert refused.is_error
        assert "$2.000000 is spent" in refused.content[0].text and "hard limit of $3.000000" in refused.content[0].text


async def test_get_cost_reports_all_time_and_since_a_date(settings: Settings) -> None:
    async with Client(priced_fake_server(settings)) as client:
        await client.call_tool("embed_text", {"text": "one two"})
    async with Client(priced_fake_server(settings)) as client:  # a restart: a new session
        await client.call_tool("embed_text", {"text": "three"})
        session = (await client.call_tool("get_cost", {})).structured_content
        everything = (await client.call_tool("get_cost", {"scope": "all"})).structured_content
        future = (await client.call_tool("get_cost", {"scope": "all", "since": "2999-01-01"})).structured_content
    assert (session["scope"], session["total_usd"]) == ("session", 1.0)
    assert (everything["total_usd"], everything["embeddings"]) == (3.0, 2)
    assert everything["by_model"]["fake-small"]["usd"] == 3.0
    assert future["total_usd"] == 0.0 and future["since"].startswith("2999-01-01")


async def test_list_providers_shows_spaces_health_and_the_active_one(client: Client) -> None:
    out = (await client.call_tool("list_providers", {})).structured_content
    providers = {p["provider"]: p for p in out["providers"]}
    assert tuple(providers) == provider_names()  # every registered provider, in the registry's order
    assert providers["local"] == {
        "provider": "local",
        "model": "all-MiniLM-L6-v2",
        "dimensions": 384,
        "space": "local:all-MiniLM-L6-v2:384:l2",
        "active": True,
        "input_types": False,  # the packaged model has no prompts: queries and documents embed alike
        "circuit": "closed",
        "last_error": None,
        "retry_in_s": 0.0,
    }
    assert providers["openai"]["space"] == "openai:text-embedding-3-small:1536:l2"
    assert providers["openai"]["active"] is False
