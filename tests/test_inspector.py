"""End-to-end: drive the server through the official MCP Inspector CLI, exactly as `.mcp.json` launches it.

Each Inspector CLI run spawns the server from `.mcp.json` (entry `signal-hub-embeddings`), performs the
handshake, makes one request and exits, so every call below is a fresh server process. The Inspector is
pinned in `tests/inspector/package.json`; `scripts/setup.sh --test` installs it with
`npm ci --prefix tests/inspector`.

What the Inspector CLI (2.12.0) does, which these helpers rely on:
- `--format json`: stdout is exactly one JSON object, `{"result": <MCP result>}`; nothing else goes to stdout.
- Exit 0 on success; 5 when a tools/call result has `isError: true` (the result is still printed on
  stdout, and `{"error": {"code": "tool_is_error", ...}}` goes to stderr) or the tool is unknown;
  1 for a JSON-RPC error, a usage error or a server that dies; 4 when the connect timeout elapses.
- The server gets only HOME, LOGNAME, PATH, SHELL, TERM and USER from the Inspector's environment, plus
  the entry's `env` taken literally (`${OPENAI_API_KEY}` is NOT expanded) and `-e KEY=VALUE` flags,
  which override the entry's `env`. So the test's settings travel as `-e`, not through `env=`.
- `--tool-arg k=v` JSON-parses each value (`text=123` becomes a number), so arguments go as one
  object through `--tool-args-json`, which passes them verbatim.
- A relative `command` in `.mcp.json` resolves against the server's working directory: `--cwd` is the
  repository root, as Claude Code uses.
- Requests time out after 60 s (the TypeScript SDK's default; the CLI has no flag for it).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
MCP_JSON = REPO / ".mcp.json"
SERVER_NAME = "signal-hub-embeddings"
INSPECTOR_DIR = REPO / "tests" / "inspector"
INSPECTOR_BIN = INSPECTOR_DIR / "node_modules" / ".bin" / "mcp-inspector"

TOOLS = {"embed_text", "embed_batch", "switch_provider", "get_cost"}
DIMENSIONS = 384
LOCAL_MODEL = "all-MiniLM-L6-v2"

# Exit codes of the Inspector CLI (core/cli/error-handler.ts, EXIT_CODES).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 4
EXIT_TOOL_ERROR = 5

# Bounds: the connect timeout covers the server's start-up (imports); the subprocess timeout covers
# start-up, the first call's model load (which the Inspector itself cuts off at 60 s) and shutdown.
CONNECT_TIMEOUT_MS = 120_000
RUN_TIMEOUT_S = 240

CODE_SNIPPET = '''def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
'''

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not INSPECTOR_BIN.exists(),
        reason=f"MCP Inspector not installed at {INSPECTOR_BIN.relative_to(REPO)}; "
        "run `npm ci --prefix tests/inspector` (scripts/setup.sh --test does it)",
    ),
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js (`node`) is not on PATH"),
]


@dataclass
class InspectorRun:
    """One Inspector CLI run: its exit code, the parsed stdout and stderr envelopes, and the raw text."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None  # stdout's {"result": ...}, when present
    error: dict[str, Any] | None  # stderr's last {"error": ...} line, when present

    def describe(self) -> str:
        tail = "\n".join(self.stderr.splitlines()[-40:])
        return (
            f"mcp-inspector {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"stdout: {self.stdout[:2000]}\nstderr (last lines):\n{tail}"
        )


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory, onnx_exports: Path) -> dict[str, str]:
    """Settings passed to the server with `-e`: offline Hugging Face, a throwaway data directory."""
    assert MCP_JSON.is_file(), f"{MCP_JSON} is missing: the Inspector launches the server from it"
    config = json.loads(MCP_JSON.read_text())
    assert SERVER_NAME in config.get("mcpServers", {}), f"{MCP_JSON} has no mcpServers.{SERVER_NAME!r} entry"
    data_dir = tmp_path_factory.mktemp("signal-hub-data")
    (data_dir / "onnx").symlink_to(onnx_exports, target_is_directory=True)
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "SIGNAL_HUB_PROVIDER": "local",
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
    }


def run_inspector(server_env: dict[str, str], *method_args: str, protocol_era: str | None = None) -> InspectorRun:
    """Run `mcp-inspector --cli` against the `.mcp.json` entry and parse what it printed."""
    args = ["--cli", "--config", str(MCP_JSON), "--server", SERVER_NAME, "--cwd", str(REPO)]
    for key, value in server_env.items():
        args += ["-e", f"{key}={value}"]
    args += ["--connect-timeout", str(CONNECT_TIMEOUT_MS), "--format", "json"]
    if protocol_era is not None:
        args += ["--protocol-era", protocol_era]
    args += list(method_args)

    env = dict(os.environ)
    # Keep the Inspector off the OS keychain / ~/.mcp-inspector/secrets.json, and its output plain.
    env["MCP_INSPECTOR_SECRET_STORE"] = "memory"
    env["NO_COLOR"] = "1"
    proc = subprocess.run(
        [str(INSPECTOR_BIN), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    result = None
    if proc.stdout.strip():
        try:
            parsed = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"Inspector stdout is not one JSON object ({exc}):\n{proc.stdout[:2000]}") from exc
        assert isinstance(parsed, dict) and "result" in parsed, f"unexpected stdout shape: {proc.stdout[:2000]}"
        result = parsed["result"]

    error = None
    for line in reversed(proc.stderr.splitlines()):
        if line.startswith('{"error"'):
            try:
                error = json.loads(line)["error"]
            except json.JSONDecodeError:
                continue
            break

    return InspectorRun(args, proc.returncode, proc.stdout, proc.stderr, result, error)


def call_tool(server_env: dict[str, str], name: str, arguments: dict[str, Any]) -> InspectorRun:
    """tools/call with the arguments passed verbatim as one JSON object."""
    return run_inspector(
        server_env, "--method", "tools/call", "--tool-name", name, "--tool-args-json", json.dumps(arguments)
    )


def structured(run: InspectorRun) -> dict[str, Any]:
    """The structuredContent of a successful tools/call, after checking the call succeeded."""
    assert run.returncode == EXIT_OK, run.describe()
    assert run.result is not None, run.describe()
    assert run.result.get("isError") is not True, run.describe()
    content = run.result.get("structuredContent")
    assert isinstance(content, dict), f"no structuredContent\n{run.describe()}"
    return content


@pytest.mark.parametrize("protocol_era", ["legacy", "modern"])
def test_lists_the_four_tools(server_env: dict[str, str], protocol_era: str) -> None:
    # legacy: the initialize handshake (what Claude Code uses); modern: server/discover at 2026-07-28.
    run = run_inspector(server_env, "--method", "tools/list", protocol_era=protocol_era)
    assert run.returncode == EXIT_OK, run.describe()
    assert run.result is not None, run.describe()
    tools = {tool["name"]: tool for tool in run.result["tools"]}
    assert set(tools) >= TOOLS, f"tools listed: {sorted(tools)}"

    assert tools["embed_text"]["inputSchema"]["required"] == ["text"]
    texts = tools["embed_batch"]["inputSchema"]["properties"]["texts"]
    assert texts["type"] == "array"
    assert texts["items"]["type"] == "string"
    assert tools["switch_provider"]["inputSchema"]["required"] == ["provider"]
    assert not tools["get_cost"]["inputSchema"].get("required")
    for name in TOOLS:
        assert tools[name].get("description"), f"{name} has no description"
    # Programs read these answers by schema; the agent-facing tools leave it out to keep tools/list small.
    for name in ("embed_text", "embed_batch", "switch_provider"):
        assert tools[name].get("outputSchema", {}).get("type") == "object", f"{name} has no object outputSchema"


def test_tools_list_has_no_schema_portability_findings(server_env: dict[str, str]) -> None:
    # --strict puts the Inspector's schema lint (`type` arrays, untyped or remote schemas) in the envelope.
    run = run_inspector(server_env, "--method", "tools/list", "--strict")
    assert run.returncode == EXIT_OK, run.describe()
    envelope = json.loads(run.stdout)
    assert "schemaFindings" not in envelope, envelope.get("schemaFindings")
    assert "Schema portability" not in run.stderr
    tools = {tool["name"]: tool for tool in envelope["result"]["tools"]}
    for name in ("rank_texts", "find_duplicates"):
        assert tools[name]["title"] and tools[name]["annotations"]["destructiveHint"] is False


def test_rank_texts(server_env: dict[str, str]) -> None:
    texts = ["SELECT id, name FROM users WHERE active = 1;", CODE_SNIPPET, "the quick brown fox"]
    out = structured(call_tool(server_env, "rank_texts", {"query": "fibonacci numbers", "texts": texts, "top_k": 2}))
    assert out["results"][0]["index"] == 1
    assert len(out["results"]) == 2
    assert out["results"][0]["preview"] == "def fibonacci(n: int) -> int:"
    assert out["space"] == f"local:{LOCAL_MODEL}:{DIMENSIONS}:l2" and out["fallback"] is False


def test_find_duplicates(server_env: dict[str, str]) -> None:
    texts = [CODE_SNIPPET, "the quick brown fox", CODE_SNIPPET.replace("    ", "\t"), "SELECT 1;"]
    out = structured(call_tool(server_env, "find_duplicates", {"texts": texts}))
    assert out["groups"][0]["indexes"] == [0, 2]
    assert out["pairs_checked"] == 6 and out["texts"] == 4


def test_mcp_json_leaves_vectors_out_unless_a_call_asks(server_env: dict[str, str]) -> None:
    # .mcp.json is the agents' configuration: SIGNAL_HUB_VECTORS=on_request.
    out = structured(call_tool(server_env, "embed_batch", {"texts": ["a", "b"]}))
    assert "embeddings" not in out and out["count"] == 2 and out["vectors_included"] is False


def test_embed_text(server_env: dict[str, str]) -> None:
    out = structured(call_tool(server_env, "embed_text", {"text": CODE_SNIPPET, "include_vectors": True}))
    assert out["dimensions"] == DIMENSIONS
    assert out["provider"] == "local"
    assert out["model"] == LOCAL_MODEL
    embedding = out["embedding"]
    assert isinstance(embedding, list)
    assert len(embedding) == DIMENSIONS
    assert all(isinstance(x, float) and math.isfinite(x) for x in embedding)
    assert any(x != 0.0 for x in embedding)


def test_embed_batch_base64(server_env: dict[str, str]) -> None:
    texts = [CODE_SNIPPET, "SELECT id, name FROM users WHERE active = 1;", "the quick brown fox"]
    out = structured(
        call_tool(server_env, "embed_batch", {"texts": texts, "encoding": "base64", "include_vectors": True})
    )
    assert out["count"] == 3
    embeddings = out["embeddings"]
    assert isinstance(embeddings, list)
    assert len(embeddings) == 3
    vectors = []
    for item in embeddings:
        assert isinstance(item, str), f"expected a base64 string, got {type(item).__name__}"
        raw = base64.b64decode(item, validate=True)
        assert len(raw) == DIMENSIONS * 4
        vectors.append(struct.unpack(f"<{DIMENSIONS}f", raw))
    assert all(math.isfinite(x) for vector in vectors for x in vector)
    assert len(set(vectors)) == 3, "different texts gave the same vector"


def test_switch_provider_to_local(server_env: dict[str, str]) -> None:
    out = structured(call_tool(server_env, "switch_provider", {"provider": "local"}))
    assert out["provider"] == "local"
    assert "previous" in out
    assert out["previous"]["provider"] == "local"  # a fresh server starts on SIGNAL_HUB_PROVIDER=local


def test_get_cost(server_env: dict[str, str]) -> None:
    out = structured(call_tool(server_env, "get_cost", {}))
    assert isinstance(out["total_usd"], int | float)
    assert out["total_usd"] >= 0
    assert isinstance(out["by_provider"], dict)
    assert isinstance(out["by_model"], dict)


def test_empty_batch_is_a_tool_error_and_the_server_stays_usable(server_env: dict[str, str]) -> None:
    bad = call_tool(server_env, "embed_batch", {"texts": []})
    # A tool error (isError result, exit 5), not a JSON-RPC error (exit 1) or a dead server.
    assert bad.returncode == EXIT_TOOL_ERROR, bad.describe()
    assert bad.result is not None, bad.describe()
    assert bad.result["isError"] is True
    messages = [block.get("text", "") for block in bad.result["content"] if block.get("type") == "text"]
    assert any(message.strip() for message in messages), f"isError result carries no message\n{bad.describe()}"
    assert bad.error is not None and bad.error["code"] == "tool_is_error", bad.describe()

    # Each Inspector CLI run is its own server process: this shows the rejected call left nothing behind
    # (data directory, cost ledger) that breaks the next session.
    good = structured(call_tool(server_env, "embed_batch", {"texts": ["still works"], "include_vectors": True}))
    assert good["count"] == 1
    assert len(good["embeddings"][0]) == DIMENSIONS
