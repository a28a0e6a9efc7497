"""A transcript of provider fallback as an MCP host sees it: the real server over stdio, OpenAI on loopback.

    .venv/bin/python -m benchmarks.fallback_transcript

The server runs as a subprocess configured only by its environment (SIGNAL_HUB_PROVIDER=openai,
OPENAI_BASE_URL pointing at a loopback OpenAI server, a 2-second circuit cool-down). The script
embeds through OpenAI, injects a 503 outage, shows the answers coming from the local model with
`fallback: true` while the circuit is open, waits out the cool-down, clears the fault and shows
OpenAI answering again. Vectors are shown as their length; the server's own log lines (stderr)
are shown where they were written. Nothing is saved: the data directory is temporary.

The first fallback loads the local model (and exports it to ONNX in the fresh data directory),
which takes most of the ~20 s the script runs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from tests.loopback_openai import LoopbackOpenAI

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-loopback-transcript"
COOLDOWN_S = 2.0
FAILURES = 2
RETRY_AFTER_MS = 50  # the loopback's 503s ask for a short wait, so each retry is quick
CALL_TIMEOUT_S = 90  # the first local call loads (and exports) the model


def server_environment(base_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "SIGNAL_HUB_PROVIDER": "openai",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": KEY,
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "SIGNAL_HUB_CIRCUIT_COOLDOWN_S": str(COOLDOWN_S),
        "SIGNAL_HUB_CIRCUIT_FAILURES": str(FAILURES),
        # Fewer retries per request where the server reads this (the 503s' retry-after keeps it short anyway).
        "SIGNAL_HUB_OPENAI_MAX_ATTEMPTS": "3",
    }


def elide(value: Any) -> Any:
    """Structured content with every vector replaced by its length."""
    if isinstance(value, dict):
        return {key: elide(item) for key, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(x, float | int) for x in value):
        return f"<{len(value)} floats>"
    if isinstance(value, list):
        return [elide(item) for item in value]
    return value


class Transcript:
    def __init__(self, client: Client, loopback: LoopbackOpenAI, server_log: TextIO) -> None:
        self.client = client
        self.loopback = loopback
        self.server_log = server_log
        self.started = time.monotonic()
        self.step = 0

    def heading(self, text: str) -> None:
        self.step += 1
        print(f"\n[{time.monotonic() - self.started:5.1f}s] ── {self.step}. {text} " + "─" * max(0, 70 - len(text)))

    def note(self, text: str) -> None:
        print(f"  # {text}")

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        print(f"→ {tool}({json.dumps(arguments)})")
        before = self.loopback.request_count
        with anyio.fail_after(CALL_TIMEOUT_S):
            result = await self.client.call_tool(tool, arguments)
        self.show_server_log()
        if result.is_error:
            print(f"← ERROR: {' '.join(c.text for c in result.content if isinstance(c, TextContent))}")
            return {}
        content = result.structured_content or {}
        shown = json.dumps(elide(content), indent=2).replace("\n", "\n  ")
        print(f"← {shown}")
        sent = self.loopback.request_count - before
        if tool.startswith("embed"):
            print(f"  loopback OpenAI: {sent} request{'s' if sent != 1 else ''} during this call")
        return content

    def show_server_log(self) -> None:
        for line in self.server_log.read().splitlines():
            if line.strip():
                print(f"  server stderr │ {line}")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fallback-transcript-") as tmp, LoopbackOpenAI(api_key=KEY) as loopback:
        log_path = Path(tmp) / "server-stderr.log"
        env = server_environment(loopback.base_url, Path(tmp) / "data")
        params = StdioServerParameters(command=sys.executable, args=["-m", "server"], env=env, cwd=ROOT)
        print(f"Loopback OpenAI at {loopback.base_url}; `{sys.executable} -m server` over stdio with:")
        for name, value in env.items():
            print(f"  {name}={'<the loopback key>' if name == 'OPENAI_API_KEY' else value}")
        with log_path.open("w") as errlog, log_path.open() as server_log:
            async with Client(
                stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=CALL_TIMEOUT_S
            ) as client:
                await run(Transcript(client, loopback, server_log))


async def run(t: Transcript) -> None:
    t.heading("OpenAI is up: embed_text is answered from its space")
    await t.call("embed_text", {"text": "def calculate_total(items): return sum(i.price for i in items)"})

    t.heading("Outage: every OpenAI request now gets 503")
    t.loopback.inject("503", times=10_000, retry_after_ms=RETRY_AFTER_MS)
    t.note(f"loopback.inject('503', times=10000, retry_after_ms={RETRY_AFTER_MS})")
    for n, text in enumerate(["class ShoppingCart:", "def apply_discount(cart, code):"], start=1):
        t.heading(f"embed_text during the outage ({n} of {FAILURES} failures that open the circuit)")
        if n == 1:
            t.note("OpenAI is retried to its bound, then the local model answers (loaded now, on first use)")
        await t.call("embed_text", {"text": text})

    t.heading("list_providers: the OpenAI circuit is open")
    listed = await t.call("list_providers", {})

    t.heading("embed_text while the circuit is open: OpenAI is not even asked")
    await t.call("embed_text", {"text": "SELECT * FROM orders WHERE total > 100"})

    wait = max(p["retry_in_s"] for p in listed.get("providers", [])) + 0.3
    t.heading(f"Wait out the cool-down ({wait:.1f} s) and end the outage")
    await anyio.sleep(wait)
    t.loopback.clear_faults()
    t.note("loopback.clear_faults()")

    t.heading("embed_text after the cool-down: the probe goes to OpenAI and works")
    await t.call("embed_text", {"text": "def refund(order): ..."})

    t.heading("list_providers: the circuit is closed again")
    await t.call("list_providers", {})

    t.heading("get_cost: OpenAI's billed tokens and the local model's free ones")
    await t.call("get_cost", {})
    print(f"\nLoopback OpenAI saw {t.loopback.request_count} requests: statuses {t.loopback.status_counts}")


if __name__ == "__main__":
    anyio.run(main)
