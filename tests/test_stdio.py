"""The server as a real subprocess over stdio: what a host like Claude Code or Signal Hub sees."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client, StdioServerParameters

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "SIGNAL_HUB_DATA_DIR": str(data_dir), "OPENAI_API_KEY": "", **extra}


@pytest.fixture
async def stdio_client(data_dir: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "server"], env=server_env(data_dir), cwd=ROOT)
    with anyio.fail_after(120):
        async with Client(params, mode="legacy", read_timeout_seconds=90) as client:
            yield client


async def test_every_tool_works_over_stdio(stdio_client: Client) -> None:
    client = stdio_client
    tools = {tool.name for tool in (await client.list_tools()).tools}
    assert tools >= {
        "embed_text",
        "embed_batch",
        "rank_texts",
        "find_duplicates",
        "switch_provider",
        "get_cost",
        "estimate_cost",
        "list_providers",
    }

    one = await client.call_tool("embed_text", {"text": "def calculate_total(items):"})
    assert not one.is_error and one.structured_content["dimensions"] == 384
    vector = np.asarray(one.structured_content["embedding"], dtype=np.float32)

    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    texts = ["def calculate_total(items):", *[f"chunk {i}" for i in range(39)]]
    batch = await client.call_tool("embed_batch", {"texts": texts, "encoding": "base64"}, progress_callback=on_progress)
    assert not batch.is_error and batch.structured_content["count"] == 40
    assert batch.structured_content["cached"] == 1
    first = np.frombuffer(base64.b64decode(batch.structured_content["embeddings"][0]), dtype="<f4")
    np.testing.assert_allclose(first, vector, atol=1e-5)
    assert progress == [9, 17, 25, 33, 40]  # the first text came from the cache, then steps of 8

    switched = await client.call_tool("switch_provider", {"provider": "local"})
    assert switched.structured_content["previous"]["space"] == "local:all-MiniLM-L6-v2:384:l2"
    assert switched.structured_content["space_changed"] is False

    cost = (await client.call_tool("get_cost", {})).structured_content
    assert cost["embeddings"] == 41 and cost["total_usd"] == 0.0


async def test_bad_input_over_stdio_is_a_tool_error_and_the_server_lives_on(stdio_client: Client) -> None:
    client = stdio_client
    for arguments in ({"texts": []}, {"texts": ["fine", " "]}, {"texts": [1, 2]}):
        result = await client.call_tool("embed_batch", arguments)
        assert result.is_error, arguments
    await client.session.send_ping()  # hosts on the handshake-era protocol still ping
    again = await client.call_tool("embed_text", {"text": "still here"})
    assert not again.is_error


def test_initialize_and_tools_list_do_not_import_torch() -> None:
    probe = """
import anyio, json, sys
from mcp import Client
from providers import Settings
from server.tools.app import build_server

async def main():
    async with Client(build_server(Settings())) as client:
        names = [t.name for t in (await client.list_tools()).tools]
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "sentence_transformers", "transformers"})
    print(json.dumps({"tools": names, "heavy": heavy}))

anyio.run(main)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(out.stdout)
    assert {"embed_text", "rank_texts", "find_duplicates"} <= set(report["tools"])
    assert report["heavy"] == []


def test_an_unknown_provider_in_the_environment_stops_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, **server_env(tmp_path, SIGNAL_HUB_PROVIDER="anthropic")}
    run = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 2
    assert "SIGNAL_HUB_PROVIDER='anthropic' is not a provider; use one of: local, openai" in run.stderr
    assert run.stdout == ""  # stdout belongs to JSON-RPC
