"""The HTTP transport over real HTTP on loopback: tokens, Origin, the body limit, sharing, /healthz, /metrics.

The server runs in this process (`serve_http` on port 0, stopped by a real SIGTERM to this
process, which its handler turns into a clean stop), and real clients talk to it: `mcp.Client`
over streamable HTTP, and `httpx2` for what a client library would never send.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx2
import numpy as np
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from providers import EmbeddingService, Settings
from server.cli import main
from server.tools.app import build_server
from server.transports.http import HttpOptions, max_body_bytes, serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef"
TOKENS = {"alice": ALICE, "bob": BOB}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Running:
    url: str
    service: EmbeddingService
    stderr: Callable[[], str]

    @property
    def base(self) -> str:
        return self.url.removesuffix("/mcp")

    @asynccontextmanager
    async def client(self, token: str | None) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            create_mcp_http_client(headers=headers) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            yield client


@asynccontextmanager
async def http_server(
    settings: Settings, capsys: pytest.CaptureFixture[str], **options: object
) -> AsyncIterator[Running]:
    service = EmbeddingService(settings=settings)
    opts = HttpOptions(host="127.0.0.1", port=0, grace_s=5, **options)  # type: ignore[arg-type]
    ready = anyio.Event()
    url = ""

    def say(address: str) -> str:
        nonlocal url
        url = address
        ready.set()
        return f"ready on {address}"

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve_http, build_server(settings, lambda _: service), service, opts, say)
        with anyio.fail_after(60):
            await ready.wait()
        running = Running(url, service, lambda: capsys.readouterr().err)
        async with httpx2.AsyncClient(timeout=30) as http:
            with anyio.fail_after(120):  # the model loads (warm-up) before /healthz says ready
                while (await http.get(f"{running.base}/healthz")).status_code != 200:
                    await anyio.sleep(0.05)
        try:
            yield running
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler: a clean stop, no KeyboardInterrupt


async def test_each_auth_case_over_http(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    async with http_server(settings, capsys, tokens=TOKENS) as server, httpx2.AsyncClient(timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {ALICE}"}):
            refused = await http.post(server.url, json=INIT, headers={**MCP_HEADERS, **headers})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer ")
        allowed = await http.post(server.url, json=INIT, headers={**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"})
        assert allowed.status_code == 200 and "signal-hub-embeddings" in allowed.text

        async with server.client(ALICE) as alice, server.client(BOB) as bob:
            await alice.call_tool("embed_text", {"text": "def a(): pass"})
            await alice.call_tool("embed_batch", {"texts": ["x = 1", "y = 2"]})
            await bob.call_tool("embed_text", {"text": "def b(): pass"})
            cost = (await bob.call_tool("get_cost", {})).structured_content
        assert cost["by_client"]["alice"]["embeddings"] == 3 and cost["by_client"]["bob"]["embeddings"] == 1

        assert (await http.get(f"{server.base}/metrics")).status_code == 401
        assert (await http.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {BOB}"})).status_code == 200
        health = await http.get(f"{server.base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ready"
        logged = server.stderr()
    assert ALICE not in logged and BOB not in logged


async def test_a_foreign_origin_is_refused_with_403(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    async with http_server(settings, capsys) as server, httpx2.AsyncClient(timeout=30) as http:
        foreign = await http.post(server.url, json=INIT, headers={**MCP_HEADERS, "Origin": "http://evil.example"})
        assert foreign.status_code == 403
        rebound = await http.post(server.url, json=INIT, headers={**MCP_HEADERS, "Host": "evil.example"})
        assert rebound.status_code == 421
        port = server.base.rsplit(":", 1)[1]
        local = await http.post(server.url, json=INIT, headers={**MCP_HEADERS, "Origin": f"http://localhost:{port}"})
        assert local.status_code == 200


async def test_a_body_over_the_limit_gets_a_json_rpc_error(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = max_body_bytes(settings.limits)
    assert limit >= 6 * 4_000_000  # every call within 4,000,000 characters fits, even escaped as \\uXXXX

    async def chunks() -> AsyncIterator[bytes]:  # streamed: no Content-Length to refuse it by
        piece = b" " * 1_048_576
        for _ in range(limit // len(piece) + 2):
            yield piece

    async with http_server(settings, capsys) as server, httpx2.AsyncClient(timeout=60) as http:
        for body in (chunks(), b" " * (limit + 1)):
            answer = await http.post(server.url, content=body, headers=MCP_HEADERS)
            assert answer.status_code == 413
            error = answer.json()
            assert error["jsonrpc"] == "2.0" and error["error"]["code"] == -32600
            assert "4,000,000 characters" in error["error"]["message"]
        async with server.client(None) as client:  # the server lives on
            assert not (await client.call_tool("embed_text", {"text": "still here"})).is_error


async def test_twelve_concurrent_clients_get_the_vectors_one_gets(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [f"def function_{i}(value):\n    return value * {i}\n" for i in range(24)]
    reference = await EmbeddingService(settings=Settings(data_dir=settings.data_dir, cache=False)).embed(texts)
    answers: list[np.ndarray] = [np.empty(0)] * 12

    async with http_server(settings, capsys) as server:

        async def one_client(index: int) -> None:
            async with server.client(None) as client:
                mine = texts[index:] + texts[:index]  # each asks in its own order
                got = await client.call_tool("embed_batch", {"texts": mine})
                assert not got.is_error
                vectors = np.asarray(got.structured_content["embeddings"], dtype=np.float32)
                answers[index] = np.roll(vectors, index, axis=0)

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tasks:
                for index in range(12):
                    tasks.start_soon(one_client, index)
    for vectors in answers:
        np.testing.assert_allclose(vectors, reference.vectors, atol=1e-6)


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


async def test_metrics_move_with_the_calls(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        http_server(settings, capsys, metrics_public=True, tokens=TOKENS) as server,
        httpx2.AsyncClient(timeout=30) as http,
        server.client(ALICE) as client,
    ):
        before = (await http.get(f"{server.base}/metrics")).text  # public: no token needed
        await client.call_tool("embed_batch", {"texts": ["a = 1", "b = 2", "c = 3"]})
        await client.call_tool("embed_text", {"text": "a = 1"})  # from the cache
        await client.call_tool("embed_batch", {"texts": []})  # an error
        after = (await http.get(f"{server.base}/metrics")).text
    ok = _sample(after, "signal_hub_tool_calls_total", status="ok", tool="embed_batch")
    assert ok - _sample(before, "signal_hub_tool_calls_total", status="ok", tool="embed_batch") == 1
    assert _sample(after, "signal_hub_tool_calls_total", status="error", tool="embed_batch") == 1
    assert _sample(after, "signal_hub_tool_call_seconds_count", tool="embed_text") == 1
    assert _sample(after, "signal_hub_embeddings_total", provider="local") == 4
    assert _sample(after, "signal_hub_cache_hits_total", provider="local") == 1
    assert _sample(after, "signal_hub_tokens_total", provider="local") > 0
    assert _sample(after, "signal_hub_circuit_state", provider="local", state="closed") == 1
    assert all(line.startswith(("#", "signal_hub_")) for line in after.splitlines() if line)


def test_a_non_loopback_host_without_tokens_is_refused_in_one_line(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNAL_HUB_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("SIGNAL_HUB_HTTP_TOKENS_FILE", raising=False)
    assert main(["serve", "--transport", "http", "--host", "0.0.0.0"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "SIGNAL_HUB_HTTP_TOKENS_FILE" in said[0]
    monkeypatch.setenv("SIGNAL_HUB_TRANSPORT", "carrier-pigeon")
    assert main(["serve"]) == 2
    assert "SIGNAL_HUB_TRANSPORT" in capsys.readouterr().err


def test_a_tokens_file_is_read_and_its_errors_name_the_line(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from providers.errors import ConfigurationError

    path = Path(str(tmp_path)) / "tokens"
    path.write_text("# team\nalice:" + ALICE + "\n\nbob:" + BOB + "\n")
    monkeypatch.setenv("SIGNAL_HUB_HTTP_TOKENS_FILE", str(path))
    options = HttpOptions.from_env(os.environ, host="0.0.0.0")  # with tokens, any host
    assert dict(options.tokens) == TOKENS and ALICE not in repr(options)
    for bad, said in (
        ("alice " + ALICE, "line 1 is not `name:token`"),
        ("alice:short", "at least 16"),
        (f"alice:{ALICE}\nalice:{BOB}", "listed twice"),
        (f"alice:{ALICE}\nbob:{ALICE}", "another client's"),
        ("# nothing", "lists no"),
    ):
        path.write_text(bad)
        with pytest.raises(ConfigurationError, match=re.escape(said)) as caught:
            HttpOptions.from_env(os.environ)
        assert ALICE not in str(caught.value) and BOB not in str(caught.value)
    monkeypatch.setenv("SIGNAL_HUB_HTTP_TOKENS_FILE", str(path.with_name("missing")))
    with pytest.raises(ConfigurationError, match="cannot be read"):
        HttpOptions.from_env(os.environ)


async def test_healthz_is_503_until_the_model_is_warm_then_200(settings: Settings) -> None:
    from server.transports.http import Health

    async with EmbeddingService(settings=settings) as service:
        health = Health(service)
        before = await health.answer(None)  # type: ignore[arg-type]
        assert before.status_code == 503 and json.loads(bytes(before.body))["status"] == "starting"
        await health.warm_up()
        after = await health.answer(None)  # type: ignore[arg-type]
        assert after.status_code == 200 and len(after.body) < 200
        assert json.loads(bytes(after.body)) == {"status": "ready", "provider": "local", "model": "all-MiniLM-L6-v2"}
