"""What agents get from the MCP tools: similarity answers, no vectors unless asked, explained errors, lean listings."""

from __future__ import annotations

import json
import sqlite3
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from mcp import Client, MCPDeprecationWarning, MCPError
from mcp.types import EmptyResult, SetLevelRequest, SetLevelRequestParams

from providers import Budget, CostLedger, EmbeddingProvider, EmbeddingResult, EmbeddingService, Settings
from server import build_server
from server.tools.budget import ANSWER_TOKEN_BUDGET, answer_json, answer_tokens
from tests.fakes import FakeProvider
from tests.test_server import TOOLS, fake_server, priced_fake_server

pytestmark = pytest.mark.anyio

TOOLS_LIST_BYTES_BEFORE = 11_789
"""Compact JSON of the tools/list result with the six tools of commit 9d15b57, measured as below."""


def model_view(result) -> str:  # type: ignore[no-untyped-def]
    """What Claude Code hands the model: the JSON of structuredContent, else the text blocks."""
    if result.structured_content is not None:
        return answer_json(result.structured_content)
    return "\n".join(block.text for block in result.content)


def assert_within_budget(result) -> str:  # type: ignore[no-untyped-def]
    view = model_view(result)
    assert answer_tokens(view) <= ANSWER_TOKEN_BUDGET, f"{answer_tokens(view)} tokens: {view[:300]}"
    return view


class RaisingProvider(FakeProvider):
    """A provider whose calls fail with an error the core does not know."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def embed(self, texts: Sequence[str], *, input_type="document", progress=None) -> EmbeddingResult:  # type: ignore[no-untyped-def]
        raise self.error


class BrokenLedger(CostLedger):
    """A ledger whose database pages are damaged: reads fail as SQLite fails on such a file."""

    def report(self, **kwargs) -> object:  # type: ignore[no-untyped-def, override]
        raise sqlite3.DatabaseError("database disk image is malformed")


def server_with(settings: Settings, provider: EmbeddingProvider, ledger: CostLedger | None = None):  # type: ignore[no-untyped-def]
    def make(s: Settings) -> EmbeddingService:
        return EmbeddingService("fake", settings=s, factories={"fake": lambda *_: provider}, ledger=ledger)

    return build_server(settings, make)


# --- metadata -------------------------------------------------------------------------------


async def test_every_tool_has_a_title_annotations_and_a_short_description_that_says_when(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    remote = {"embed_text", "embed_batch", "rank_texts", "find_duplicates", "start_embedding_job", "resume_job"}
    for name, tool in tools.items():
        assert tool.title, name
        hints = tool.annotations
        assert hints is not None, name
        assert hints.destructive_hint is False, name
        assert hints.read_only_hint is not None and hints.idempotent_hint is not None, name
        assert hints.open_world_hint is (name in remote), name
        lines = tool.description.splitlines()
        assert 2 <= len(lines) <= 4 and all(len(line) <= 110 for line in lines), (name, tool.description)
        assert "title" not in tool.input_schema.get("properties", {}).get("texts", {})
    assert tools["get_cost"].annotations.read_only_hint is True
    assert tools["switch_provider"].annotations.read_only_hint is False
    assert "rank_texts" in tools["embed_batch"].description  # points agents at the tool they want


async def test_tools_list_with_every_registered_tool_is_no_larger_than_before(settings: Settings) -> None:
    # Agents pay for tools/list on every turn. Counts every registered tool, so tools added later count too.
    async with Client(build_server(settings)) as client:
        listed = await client.list_tools()
    size = len(json.dumps(listed.model_dump(by_alias=True, exclude_none=True, mode="json"), separators=(",", ":")))
    assert len(listed.tools) == 13  # the eight of issue 13 and the five job tools
    assert size <= TOOLS_LIST_BYTES_BEFORE, f"tools/list is {size} bytes for {len(listed.tools)} tools"


async def test_schemas_carry_no_generated_titles_but_keep_a_property_named_title() -> None:
    from server.tools.registration import _without_titles

    schema = {
        "title": "Args",
        "properties": {
            "title": {"title": "Title", "type": "string"},
            "x": {"anyOf": [{"title": "X", "type": "integer"}]},
        },
        "$defs": {"D": {"title": "D", "type": "object", "properties": {}}},
        "default": {"title": "kept: data, not a schema"},
    }
    assert _without_titles(schema) == {
        "properties": {"title": {"type": "string"}, "x": {"anyOf": [{"type": "integer"}]}},
        "$defs": {"D": {"type": "object", "properties": {}}},
        "default": {"title": "kept: data, not a schema"},
    }


# --- vectors only for those who ask -----------------------------------------------------------


async def test_on_request_answers_everything_but_the_vectors_unless_asked(settings: Settings) -> None:
    async with Client(fake_server(replace(settings, vectors="on_request"))) as client:
        batch = (await client.call_tool("embed_batch", {"texts": ["a", "b"]})).structured_content
        assert "embeddings" not in batch and batch["vectors_included"] is False
        assert (batch["count"], batch["dimensions"], batch["tokens"], batch["cost_usd"]) == (2, 8, 2, None)
        asked = (await client.call_tool("embed_batch", {"texts": ["a"], "include_vectors": True})).structured_content
        assert len(asked["embeddings"]) == 1 and asked["vectors_included"] is True and asked["cached"] == 1
        one = (await client.call_tool("embed_text", {"text": "a"})).structured_content
        assert "embedding" not in one and one["cached"] == 1 and one["vectors_included"] is False
        one = (await client.call_tool("embed_text", {"text": "a", "include_vectors": True})).structured_content
        assert len(one["embedding"]) == 8


async def test_inline_keeps_the_vectors_and_include_vectors_false_leaves_them_out(settings: Settings) -> None:
    async with Client(fake_server(settings)) as client:
        inline = (await client.call_tool("embed_batch", {"texts": ["a", "b"]})).structured_content
        assert len(inline["embeddings"]) == 2 and "more" not in inline  # the hosts' contract, unchanged
        bare = await client.call_tool("embed_text", {"text": "a", "include_vectors": False})
        assert "embedding" not in bare.structured_content


async def test_without_vectors_a_large_batch_is_not_refused_for_its_answer_size(settings: Settings) -> None:
    async with Client(fake_server(replace(settings, vectors="on_request"), dimensions=3072)) as client:
        result = await client.call_tool("embed_batch", {"texts": [f"t{i}" for i in range(1000)]})
    assert not result.is_error and result.structured_content["count"] == 1000
    assert_within_budget(result)


# --- similarity tools ----------------------------------------------------------------------


async def test_rank_texts_answers_index_score_and_preview_best_first(settings: Settings) -> None:
    texts = ["first\nsecond line", "the needle", "  \n  indented needle line  \nmore"]
    async with Client(fake_server(settings)) as client:
        result = await client.call_tool("rank_texts", {"query": "the needle", "texts": texts, "top_k": 3})
    out = result.structured_content
    assert out["results"][0]["index"] == 1 and out["results"][0]["score"] == 1.0
    assert {r["preview"] for r in out["results"]} == {"first", "the needle", "indented needle line"}
    assert (out["candidates"], out["space"], out["fallback"], out["cached"]) == (3, "fake:fake-small:8:l2", False, 0)
    assert "more" not in out and "fallback_reason" not in out
    assert "Ranked 3 texts; best #1" in result.content[0].text


async def test_a_ranking_too_long_for_the_budget_is_cut_whole_results_at_a_time(settings: Settings) -> None:
    texts = [f"{i} " + "wordy preview text " * 10 for i in range(600)]
    async with Client(fake_server(settings)) as client:
        result = await client.call_tool("rank_texts", {"query": "q", "texts": texts, "top_k": 600})
    view = assert_within_budget(result)
    out = json.loads(view)
    shown = len(out["results"])
    assert 10 < shown < 600
    assert out["more"].startswith(f"and {600 - shown} more results")


async def test_find_duplicates_answers_groups_largest_first(settings: Settings) -> None:
    texts = ["a", "b", "a", "c", "b", "a"]
    async with Client(fake_server(settings)) as client:
        result = await client.call_tool("find_duplicates", {"texts": texts})
    out = result.structured_content
    assert out["groups"] == [
        {"indexes": [0, 2, 5], "size": 3, "min_score": 1.0},
        {"indexes": [1, 4], "size": 2, "min_score": 1.0},
    ]
    assert (out["texts"], out["pairs_checked"], out["threshold"]) == (6, 15, 0.95)
    assert "2 groups" in result.content[0].text


async def test_many_duplicate_groups_are_cut_with_a_marker_never_mid_json(settings: Settings) -> None:
    texts = [f"text {i % 600}" for i in range(1800)]  # 600 groups of 3
    async with Client(fake_server(settings, dimensions=256)) as client:  # no chance near-copies
        result = await client.call_tool("find_duplicates", {"texts": texts})
    out = json.loads(assert_within_budget(result))
    assert 10 < len(out["groups"]) < 600 and all(g["size"] == 3 for g in out["groups"])
    assert out["more"] == f"and {600 - len(out['groups'])} more groups: raise threshold or pass fewer texts."


async def test_one_huge_group_shows_what_fits_of_its_indexes(settings: Settings) -> None:
    async with Client(fake_server(settings)) as client:
        result = await client.call_tool("find_duplicates", {"texts": ["same"] * 2048})
    out = json.loads(assert_within_budget(result))
    (group,) = out["groups"]
    assert group["size"] == 2048 and 100 < len(group["indexes"]) < 2048
    assert group["indexes"] == list(range(len(group["indexes"])))
    assert out["more"] == f"the group of 2048 shows {len(group['indexes'])} of its indexes."


@pytest.mark.slow
async def test_rank_texts_puts_the_matching_snippet_first_with_the_real_model(settings: Settings) -> None:
    snippets = [
        "def read_json(path):\n    with open(path) as f:\n        return json.load(f)",
        "SELECT name, email FROM users WHERE active = 1 ORDER BY name",
        "async def fetch(url):\n    async with httpx.AsyncClient() as c:\n        return (await c.get(url)).text",
        "def quicksort(xs):\n    if len(xs) < 2: return xs\n    return quicksort([x for x in xs[1:] if x < xs[0]])",
        "The cat sat on the mat and watched the birds in the garden.",
        "docker run -p 8080:80 -v $(pwd):/app nginx:latest",
    ]
    queries = {
        "load a JSON file from disk": 0,
        "list active users from the database": 1,
        "download a web page asynchronously over HTTP": 2,
        "sort a list recursively": 3,
        "a pet animal resting": 4,
        "start a web server container": 5,
    }
    async with Client(build_server(settings), read_timeout_seconds=120) as client:
        for query, expected in queries.items():
            out = (await client.call_tool("rank_texts", {"query": query, "texts": snippets})).structured_content
            assert out["results"][0]["index"] == expected, (query, out["results"][:2])


@pytest.mark.slow
async def test_find_duplicates_groups_reformatted_and_renamed_code_with_the_real_model(settings: Settings) -> None:
    texts = [
        "def total(items):\n    return sum(item.price for item in items)",
        "def total(items):\n\n        return sum( item.price  for item in items )\n",  # whitespace only
        "def total(products):\n    return sum(product.price for product in products)",  # renamed variables
        "SELECT id FROM orders WHERE shipped = 0",
        "class Stack:\n    def __init__(self):\n        self.items = []",
        "select id from orders where shipped = 0",  # case only
        "def average(items):\n    return sum(item.price for item in items) / len(items)",  # similar, not a copy
    ]
    async with Client(build_server(settings), read_timeout_seconds=120) as client:
        # all-MiniLM-L6-v2 scores renamed variables at ~0.87 and a different function at ~0.82.
        out = (await client.call_tool("find_duplicates", {"texts": texts, "threshold": 0.85})).structured_content
        strict = (await client.call_tool("find_duplicates", {"texts": texts})).structured_content
    assert [g["indexes"] for g in out["groups"]] == [[0, 1, 2], [3, 5]], out["groups"]
    assert 0.85 <= out["groups"][0]["min_score"] < 0.95
    assert [g["indexes"] for g in strict["groups"]] == [[0, 1], [3, 5]], strict["groups"]
    assert out["cached"] == 0 and strict["cached"] == 7


# --- errors ----------------------------------------------------------------------------------


async def test_an_unexpected_provider_failure_is_explained_not_bare(settings: Settings) -> None:
    async with Client(server_with(settings, RaisingProvider(RuntimeError("tensor shape mismatch")))) as client:
        for tool, arguments in [
            ("embed_text", {"text": "x"}),
            ("rank_texts", {"query": "q", "texts": ["x"]}),
            ("find_duplicates", {"texts": ["x", "y"]}),
        ]:
            result = await client.call_tool(tool, arguments)
            text = result.content[0].text
            assert result.is_error and text != f"Error executing tool {tool}"
            assert f"Error executing tool {tool}: unexpected RuntimeError: tensor shape mismatch" in text
            assert "retry" in text
            assert_within_budget(result)


async def test_a_damaged_ledger_is_explained_with_what_to_do(settings: Settings, tmp_path: Path) -> None:
    ledger = BrokenLedger(tmp_path / "ledger.sqlite3")
    async with Client(server_with(settings, FakeProvider(), ledger)) as client:
        result = await client.call_tool("get_cost", {})
    text = result.content[0].text
    assert result.is_error and "database disk image is malformed" in text
    assert "move ledger.sqlite3 and cache.sqlite3 out of the data directory" in text


async def test_an_error_never_shows_the_api_key(settings: Settings) -> None:
    key = "sk-test-abcdefghijklmnop"
    keyed = replace(settings, openai_api_key=key)
    async with Client(server_with(keyed, RaisingProvider(RuntimeError(f"bad header Bearer {key}")))) as client:
        result = await client.call_tool("embed_text", {"text": "x"})
    assert result.is_error and key not in result.content[0].text and "[redacted]" in result.content[0].text


async def test_thousands_of_invalid_arguments_make_a_short_error(settings: Settings) -> None:
    async with Client(fake_server(settings)) as client:
        result = await client.call_tool("embed_batch", {"texts": list(range(3000))})
    text = result.content[0].text
    assert result.is_error and "texts.0: Input should be a valid string" in text
    assert "and 2995 more invalid values" in text and "input_value" not in text
    assert_within_budget(result)


async def test_a_long_error_message_is_cut_at_a_line_end() -> None:
    from server.tools.budget import shorten

    message = "\n".join(f"line {i} " + "x" * 50 for i in range(200))
    short = shorten(message)
    assert len(short.encode()) <= ANSWER_TOKEN_BUDGET // 2 and short.endswith("more characters cut)")
    assert short.splitlines()[-2].startswith("line ") and short.splitlines()[-2].endswith("x")


# --- issue 12: list_providers, get_cost, switch_provider ----------------------------------------


async def test_a_provider_with_a_bad_model_directory_shows_its_own_error(settings: Settings) -> None:
    # (Were the broken provider the active one, the server would refuse to start, saying why.)
    active = "openai"
    broken = replace(settings, provider=active, local_models={"x": Path("/nonexistent")}, local_model="x")
    async with Client(build_server(broken)) as client:
        result = await client.call_tool("list_providers", {})
    assert not result.is_error, result.content[0].text
    rows = {row["provider"]: row for row in result.structured_content["providers"]}
    assert rows["local"]["circuit"] == "unavailable" and "/nonexistent" in rows["local"]["last_error"]
    assert rows["local"]["active"] is (active == "local")
    assert rows["openai"]["space"] == "openai:text-embedding-3-small:1536:l2"
    assert_within_budget(result)


async def test_get_cost_answers_the_session_beside_the_period_and_all_time(settings: Settings) -> None:
    priced = replace(settings, prices={"fake-small": 1_000_000.0}, budget=Budget(period="day"))
    async with Client(fake_server(priced)) as client:
        await client.call_tool("embed_text", {"text": "one two"})
    async with Client(fake_server(priced)) as client:  # a client that starts one process per call
        await client.call_tool("embed_text", {"text": "three"})
        result = await client.call_tool("get_cost", {})
    out = result.structured_content
    assert (out["total_usd"], out["session_usd"], out["period"], out["period_usd"], out["all_time_usd"]) == (
        1.0,
        1.0,
        "day",
        3.0,
        3.0,
    )
    assert "this day $3.000000, all time $3.000000" in result.content[0].text
    assert_within_budget(result)


async def test_switching_to_openai_without_a_key_warns_and_never_shows_a_key(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("switch_provider", {"provider": "openai"})
    assert not result.is_error
    assert "OPENAI_API_KEY" in result.structured_content["warning"]
    assert "Warning: no OpenAI API key is set" in result.content[0].text
    keyed = replace(settings, openai_api_key="sk-test-abcdefghijklmnop")
    async with Client(build_server(keyed)) as client:
        result = await client.call_tool("switch_provider", {"provider": "openai"})
    assert "warning" not in result.structured_content
    assert "sk-test" not in json.dumps(result.structured_content) + result.content[0].text


async def test_estimate_cost_and_list_providers_fit_the_budget(settings: Settings) -> None:
    async with Client(fake_server(settings)) as client:
        for tool, arguments in [("estimate_cost", {"texts": ["x " * 1000] * 2048}), ("list_providers", {})]:
            assert_within_budget(await client.call_tool(tool, arguments))


class TruncatingProvider(FakeProvider):
    """Reports every text as cut to the model's window."""

    async def embed(self, texts: Sequence[str], *, input_type="document", progress=None) -> EmbeddingResult:  # type: ignore[no-untyped-def]
        result = await super().embed(texts, input_type=input_type, progress=progress)
        return replace(result, truncated={i: 40 + i for i in range(len(texts))})


async def test_without_vectors_a_long_truncation_list_is_cut_with_a_marker(settings: Settings) -> None:
    on_request = replace(settings, vectors="on_request")
    async with Client(server_with(on_request, TruncatingProvider())) as client:
        result = await client.call_tool("embed_batch", {"texts": [f"text {i}" for i in range(2048)]})
        out = json.loads(assert_within_budget(result))
        shown = len(out["truncated"])
        assert 10 < shown < 2048 and out["more"] == f"and {2048 - shown} more truncated texts"
        assert out["truncated"][:2] == [{"index": 0, "dropped_tokens": 40}, {"index": 1, "dropped_tokens": 41}]
        inline = await client.call_tool("embed_batch", {"texts": ["a", "b"], "include_vectors": True})
        assert len(inline.structured_content["truncated"]) == 2 and "more" not in inline.structured_content


def test_unexpected_errors_are_explained_by_kind() -> None:
    from server.tools.registration import explain

    assert "writable" in explain(PermissionError(13, "Permission denied"))
    assert explain(ValueError("odd")).startswith("unexpected ValueError: odd. The server is still running")
    # A lock or a full disk passes: the advice is to retry, never to move the ledger aside (that resets the budget).
    for error in (sqlite3.OperationalError("database is locked"), sqlite3.OperationalError("database or disk is full")):
        advice = explain(error)
        assert "retry" in advice.lower() and "nothing stored is lost" in advice and "ledger.sqlite3" not in advice
    assert "locked by another process" in explain(sqlite3.OperationalError("database is locked"))
    assert "the disk is full" in explain(sqlite3.OperationalError("database or disk is full"))


async def test_tools_registered_later_share_the_error_policy_and_metadata(settings: Settings) -> None:
    # How another module (e.g. job tools) adds tools: add_tool on the server build_server returns.
    from mcp.server.mcpserver.exceptions import ToolError

    from server.tools.registration import add_tool

    server = build_server(settings)

    async def refuse(reason: str) -> str:
        """Refuse with the reason.
        A test tool."""
        raise ToolError("refused: " + reason * 5000)

    async def crash() -> str:
        """Crash.
        A test tool."""
        raise KeyError("job-42")

    add_tool(server, refuse, title="Refuse", read_only=True)
    add_tool(server, crash, title="Crash")
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["refuse"].title == "Refuse" and tools["refuse"].annotations.read_only_hint is True
        refused = await client.call_tool("refuse", {"reason": "no "})
        assert refused.is_error and refused.content[0].text.startswith("Error executing tool refuse: refused: no no")
        assert_within_budget(refused)
        crashed = await client.call_tool("crash", {})
        assert "unexpected KeyError: 'job-42'" in crashed.content[0].text
        unknown = await client.call_tool("rank", {})
        assert unknown.is_error and "Unknown tool 'rank': the tools are " in unknown.content[0].text
        assert "rank_texts" in unknown.content[0].text


def test_signal_hub_vectors_is_read_and_checked() -> None:
    from providers import ConfigurationError

    assert Settings.from_env({}).vectors == "inline"
    assert Settings.from_env({"SIGNAL_HUB_VECTORS": " On_Request "}).vectors == "on_request"
    with pytest.raises(ConfigurationError, match="SIGNAL_HUB_VECTORS must be one of: inline, on_request"):
        Settings.from_env({"SIGNAL_HUB_VECTORS": "never"})


@pytest.mark.parametrize("vectors", ["inline", "on_request"])
async def test_the_instructions_say_which_tool_answers_which_need_and_are_true_under_each_vectors_setting(
    settings: Settings, vectors: str
) -> None:
    async with Client(fake_server(replace(settings, vectors=vectors))) as client:  # type: ignore[arg-type]
        said = client.instructions
        one = await client.call_tool("embed_text", {"text": "def f(): pass"})
        many = await client.call_tool("embed_batch", {"texts": ["a", "b"]})
        tools = {tool.name for tool in (await client.list_tools()).tools}
    assert said is not None and len(said) < 600
    inline = vectors == "inline"
    assert ("embedding" in one.structured_content) is inline
    assert ("embeddings" in many.structured_content) is inline
    assert "raw vectors" not in said
    assert ("(they return the vectors)" in said) is inline
    assert ("include_vectors: true; without it they answer count, space, tokens and cost but no vectors" in said) is (
        not inline
    )
    lines = said.splitlines()
    needs = {
        "match a query": "rank_texts",
        "near-copies": "find_duplicates",
        "index a file or directory": "start_embedding_job",
        "price a job": "estimate_cost",
        "money spent": "get_cost",
        "vectors for a program": "embed_batch",
    }
    for need, tool in needs.items():
        assert any(need in line and tool in line for line in lines), (need, tool)
    named = {word.strip("`:;,()") for word in said.split() if "_" in word and word.islower()}
    assert named - {"include_vectors"} <= tools


async def test_logging_set_level_is_declared_answered_and_honoured_per_session(settings: Settings) -> None:
    logged: list[str] = []

    async def on_log(params) -> None:  # type: ignore[no-untyped-def]
        logged.append(f"{params.level}: {params.data}")

    server = priced_fake_server(settings, soft_usd=1.0)
    async with Client(server, mode="legacy", logging_callback=on_log) as client:
        assert client.server_capabilities.logging is not None  # declared at initialize
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            assert await client.set_logging_level("error") is not None  # not "Method not found"
            quiet = await client.call_tool("embed_text", {"text": "one two"})
            await client.set_logging_level("warning")
            loud = await client.call_tool("embed_text", {"text": "three four"})
            with pytest.raises(MCPError) as refused:
                await client.session.send_request(
                    SetLevelRequest(params=SetLevelRequestParams.model_construct(level="loud")), EmptyResult
                )
    assert "soft limit" in quiet.structured_content["warning"]  # still in the answer, not in the log
    assert "soft limit" in loud.structured_content["warning"]
    assert len(logged) == 1 and logged[0].startswith("warning: ") and "soft limit" in logged[0]
    assert refused.value.error.code == -32602


async def test_an_unknown_argument_is_refused_naming_it_and_the_arguments_the_tool_takes(settings: Settings) -> None:
    async with Client(fake_server(settings)) as client:
        tools = (await client.list_tools()).tools
        refusals = {tool.name: await client.call_tool(tool.name, {"bogus_arg": 1}) for tool in tools}
        misspelt = await client.call_tool("embed_text", {"text": "def f(): pass", "include_vector": True})
        cost = (await client.call_tool("get_cost", {})).structured_content
    assert cost["requests"] == 0  # nothing was embedded: the misspelt call did not run
    for tool in tools:
        refused = refusals[tool.name]
        assert refused.is_error, tool.name
        takes = ", ".join(tool.input_schema["properties"]) or "no arguments"
        assert f"unknown argument 'bogus_arg'; {tool.name} takes: {takes}." in refused.content[0].text
    embed_text = next(tool for tool in tools if tool.name == "embed_text")
    assert misspelt.is_error
    assert misspelt.content[0].text == (
        "Error executing tool embed_text: unknown argument 'include_vector' (did you mean 'include_vectors'?); "
        f"embed_text takes: {', '.join(embed_text.input_schema['properties'])}. Fix the call and call again."
    )
    assert {"text", "provider", "encoding", "include_vectors"} <= set(embed_text.input_schema["properties"])
