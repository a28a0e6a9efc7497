"""One `rank_texts` call per vendor provider (Voyage, Gemini, Cohere, Mistral), with the requests its API received.

    .venv/bin/python -m benchmarks.vendor_transcript [--compact]   # --compact: one line per JSON document

For each vendor, a loopback server speaking its API (`tests/loopback_vendors.py`) and the real
MCP server over stdio, configured only by its environment (`SIGNAL_HUB_PROVIDER=<vendor>`,
`SIGNAL_HUB_<VENDOR>_BASE_URL` at the loopback, the vendor's key variable). The script calls
`rank_texts` once and prints the answer, then every request body the loopback received, with the
field that carries the input type: the query goes as a query, the texts as documents (Mistral's
API has no such field, so none is sent). Vectors are shown as their length. Nothing is saved.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from tests.loopback_vendors import FLAVOURS, KEY, SMALLEST, Flavour, LoopbackVendor

ROOT = Path(__file__).resolve().parents[1]
INDENT = None if "--compact" in sys.argv else 2
CALL_TIMEOUT_S = 60
KEY_VARIABLES = {"voyage": "VOYAGE_API_KEY", "gemini": "GEMINI_API_KEY", "cohere": "COHERE_API_KEY"}
QUERY = "parse a JSON config file"
TEXTS = [
    "def load_config(path):\n    with open(path) as f:\n        return json.load(f)",
    "class Cart:\n    def total(self):\n        return sum(i.price for i in self.items)",
    "def save_config(path, data):\n    Path(path).write_text(json.dumps(data))",
]


def environment(flavour: Flavour, base_url: str, data_dir: Path) -> dict[str, str]:
    prefix = f"SIGNAL_HUB_{flavour.upper()}"
    return {
        "PYTHONPATH": str(ROOT),
        "SIGNAL_HUB_PROVIDER": flavour,
        f"{prefix}_BASE_URL": base_url,
        f"{prefix}_DIMENSIONS": str(SMALLEST[flavour]),
        KEY_VARIABLES.get(flavour, "MISTRAL_API_KEY"): KEY,
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
        "SIGNAL_HUB_FALLBACK": "never",
        "HF_HUB_OFFLINE": "1",
    }


def shown(body: Any) -> Any:
    """A request body with texts cut to their first line and vectors to their length."""
    if isinstance(body, dict):
        return {key: shown(value) for key, value in body.items()}
    if isinstance(body, list) and body and all(isinstance(x, float | int) for x in body):
        return f"<{len(body)} floats>"
    if isinstance(body, list):
        return [shown(item) for item in body]
    if isinstance(body, str) and "\n" in body:
        return body.splitlines()[0] + " …"
    return body


async def one(flavour: Flavour) -> None:
    with (
        tempfile.TemporaryDirectory(prefix=f"{flavour}-transcript-") as tmp,
        LoopbackVendor(flavour, dimensions=SMALLEST[flavour]) as loopback,
    ):
        env = environment(flavour, loopback.base_url, Path(tmp) / "data")
        print(f"\n══ {flavour}: `python -m server` over stdio, its API on loopback at {loopback.base_url}")
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "server"], env={**os.environ, **env}, cwd=ROOT
        )
        with (Path(tmp) / "stderr.log").open("w") as errlog:
            async with Client(
                stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=CALL_TIMEOUT_S
            ) as client:
                arguments = {"query": QUERY, "texts": TEXTS, "top_k": 3}
                print(f"→ rank_texts({json.dumps(arguments)[:100]}…)")
                with anyio.fail_after(CALL_TIMEOUT_S):
                    result = await client.call_tool("rank_texts", arguments)
        if result.is_error:
            print(f"← ERROR: {' '.join(c.text for c in result.content if isinstance(c, TextContent))}")
        else:
            print("← " + json.dumps(result.structured_content, indent=INDENT, ensure_ascii=False).replace("\n", "\n  "))
        for n, seen in enumerate(loopback.seen, 1):
            header = "x-goog-api-key" if flavour == "gemini" else "authorization"
            auth = "<the key>" if seen.headers.get(header, "").endswith(KEY) else seen.headers.get(header)
            print(f"  request {n}: POST {seen.path}  {header}: {auth}  → {seen.status}")
            print("    " + json.dumps(shown(seen.body), indent=INDENT, ensure_ascii=False).replace("\n", "\n    "))


async def main() -> None:
    for flavour in FLAVOURS:
        await one(flavour)


if __name__ == "__main__":
    anyio.run(main)
