"""Every typical answer fits an agent's context: counted as Claude Code counts it, over a real stdio session.

Claude Code (and VS Code) hand the model `JSON.stringify(structuredContent)` when a result has
structured content, else its text blocks; this counts that text in cl100k tokens.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from benchmarks.corpus import code_chunks
from server.tools.budget import ANSWER_TOKEN_BUDGET, answer_json, answer_tokens
from tests.test_stdio import ROOT, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def snippets(count: int) -> list[str]:
    """8-line chunks of the standard library; every hundredth followed by a copy with other indentation."""
    texts = code_chunks(count, lines=8)
    for i in range(0, count, 100):
        texts[i + 1] = texts[i].replace("    ", "  ")
    return texts


def model_tokens(result: Any) -> int:
    if result.structured_content is not None:
        return answer_tokens(answer_json(result.structured_content))
    return answer_tokens("\n".join(block.text for block in result.content))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory, onnx_exports: Path) -> AsyncIterator[Client]:
    data_dir = tmp_path_factory.mktemp("budget-data")
    (data_dir / "onnx").symlink_to(onnx_exports, target_is_directory=True)
    env = server_env(data_dir, SIGNAL_HUB_VECTORS="on_request")
    params = StdioServerParameters(command=sys.executable, args=["-m", "server"], env=env, cwd=ROOT)
    with anyio.fail_after(300):
        async with Client(params, mode="legacy", read_timeout_seconds=240) as client:
            yield client


TYPICAL = [
    ("embed_batch", lambda: {"texts": snippets(100)}),
    ("rank_texts", lambda: {"query": "return a response for the request", "texts": snippets(500), "top_k": 10}),
    ("find_duplicates", lambda: {"texts": snippets(500)}),
    ("embed_text", lambda: {"text": "def handler(request): ..."}),
    ("get_cost", lambda: {}),
    ("get_cost", lambda: {"scope": "all"}),
    ("list_providers", lambda: {}),
    ("estimate_cost", lambda: {"texts": snippets(500)}),
    ("switch_provider", lambda: {"provider": "local"}),
]

ERRORS = [
    ("embed_batch", {"texts": []}),
    ("embed_batch", {"texts": list(range(3000))}),
    ("embed_batch", {"texts": ["x"] * 2049}),
    ("embed_batch", {"texts": "x" * 100_000}),
    ("embed_text", {"text": " "}),
    ("embed_text", {"text": "x", "provider": "anthropic"}),
    ("rank_texts", {"query": "", "texts": ["a"]}),
    ("rank_texts", {"query": "q", "texts": ["a"], "top_k": 0}),
    ("find_duplicates", {"texts": ["a"], "threshold": 2}),
    ("find_duplicates", {"texts": [None] * 2048}),
    ("switch_provider", {"provider": "local", "model": "/etc/passwd"}),
    ("get_cost", {"since": "not a date"}),
    ("no_such_tool", {}),
]


@pytest.mark.parametrize(("tool", "arguments"), TYPICAL, ids=[f"{t}-{i}" for i, (t, _) in enumerate(TYPICAL)])
async def test_typical_answers_fit_in_2000_tokens(client: Client, tool: str, arguments: Any) -> None:
    result = await client.call_tool(tool, arguments())
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    assert model_tokens(result) <= ANSWER_TOKEN_BUDGET


async def test_the_typical_similarity_answers_are_complete(client: Client) -> None:
    ranked = (await client.call_tool("rank_texts", TYPICAL[1][1]())).structured_content
    assert len(ranked["results"]) == 10 and "more" not in ranked
    found = (await client.call_tool("find_duplicates", TYPICAL[2][1]())).structured_content
    groups = [set(g["indexes"]) for g in found["groups"]]
    assert "more" not in found and 5 <= len(groups) < 50
    for i in range(0, 500, 100):
        assert any({i, i + 1} <= group for group in groups), i
    batch = (await client.call_tool("embed_batch", TYPICAL[0][1]())).structured_content
    assert "embeddings" not in batch and batch["cached"] == 100  # on_request: no vectors


@pytest.mark.parametrize(("tool", "arguments"), ERRORS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(ERRORS)])
async def test_every_error_fits_and_says_more_than_its_tool_name(client: Client, tool: str, arguments: Any) -> None:
    result = await client.call_tool(tool, arguments)
    assert result.is_error and result.structured_content is None
    text = "\n".join(block.text for block in result.content)
    assert text.strip() != f"Error executing tool {tool}" and len(text) > 40, text
    assert model_tokens(result) <= ANSWER_TOKEN_BUDGET
