"""Server start-up: from launching the process to its `tools/list` answer, as a host sees it.

    .venv/bin/python -m benchmarks.startup [--runs 10]

Each run launches the server the way `.mcp.json` does (`scripts/serve`, which checks the set-up
first, then the console script) and, for comparison, `python -m server` directly; a real MCP
client connects over stdio, initializes and lists the tools. Runs alternate between the two
launchers so a neighbour's load falls on both alike. Prints the median and worst time of each,
and then the time to a first `embed_text` answer: the model loads lazily, on first use, and
the very first start on a new data directory also exports the int8 ONNX model once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"embed_text", "embed_batch", "switch_provider", "get_cost", "estimate_cost", "list_providers"}
LAUNCHERS = {
    "scripts/serve (.mcp.json)": [str(ROOT / "scripts" / "serve")],
    "python -m server": [sys.executable, "-m", "server"],
}


async def time_to_tools_list(
    command: list[str], data_dir: Path, *, call_tool: bool = False
) -> tuple[float, float | None]:
    """Seconds from launch to the tools/list answer, and to a first embed_text answer if asked."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIGNAL_HUB_DATA_DIR": str(data_dir), "SIGNAL_HUB_CACHE": "off"}
    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=ROOT)
    started = time.perf_counter()
    with anyio.fail_after(120):
        async with Client(params, mode="legacy", read_timeout_seconds=90) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            listed = time.perf_counter() - started
            if not tools >= TOOLS:
                raise SystemExit(f"unexpected tools: {sorted(tools)}")
            first_call = None
            if call_tool:
                result = await client.call_tool("embed_text", {"text": "def calculate_total(items):"})
                if result.is_error:
                    raise SystemExit(f"embed_text failed: {result.content}")
                first_call = time.perf_counter() - started
    return listed, first_call


async def main(runs: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        # One untimed launch per launcher: the first import of a fresh venv compiles bytecode.
        for command in LAUNCHERS.values():
            await time_to_tools_list(command, data_dir)
        for run in range(runs):
            order = list(LAUNCHERS.items())
            for name, command in order[run % 2 :] + order[: run % 2]:
                listed, _ = await time_to_tools_list(command, data_dir)
                times[name].append(listed)
        direct = LAUNCHERS["python -m server"]
        with tempfile.TemporaryDirectory() as fresh:
            # A new data directory: the first call also exports and quantises the ONNX model.
            _, first_ever = await time_to_tools_list(direct, Path(fresh), call_tool=True)
            _, first_call = await time_to_tools_list(direct, Path(fresh), call_tool=True)

    print(f"Start-up to a tools/list answer over stdio, {runs} runs each:")
    for name, values in times.items():
        print(f"  {name:28} median {statistics.median(values):.2f} s, worst {max(values):.2f} s")
    print("Launch to the first embed_text answer (the model loads lazily, on first use):")
    print(f"  first run on a new data directory (one-time ONNX export included) {first_ever:.2f} s")
    print(f"  every later start                                                  {first_call:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    anyio.run(main, parser.parse_args().runs)
