"""One HTTP server shared by 1, 8 and 32 clients, against in-process embedding and against idle.

    python -m benchmarks.http_clients [--batches 8] [--clients 1,8,32]

Every client mixes one-text `embed_text` calls with `embed_batch` calls of 100 code chunks
(base64 vectors, cache off so every text is embedded). Printed, all measured in this run:
- batch throughput over HTTP against the same batches embedded in-process (before and after);
- one-text p50/p95 under load against the same call on the idle server;
- memory: the server's peak RSS with 8 clients against 8 x the RSS of one stdio server that
  has embedded (8 stdio servers share nothing, so each holds its own model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from benchmarks.corpus import code_chunks
from providers import EmbeddingService, Settings
from tests.http_server import ROOT, HttpServer

BATCH = 100


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def in_process(settings: Settings, batches: list[list[str]]) -> float:
    """Chunks a second, embedding the batches one after another in this process."""
    async with EmbeddingService(settings=settings) as service:
        await service.embed(["def warm_up(): pass"])
        started = time.perf_counter()
        for batch in batches:
            await service.embed(batch)
        return sum(map(len, batches)) / (time.perf_counter() - started)


async def idle_latency(server: HttpServer, texts: list[str]) -> list[float]:
    async with server.client(None) as client:
        await client.list_tools()
        seconds = []
        for text in texts:
            started = time.perf_counter()
            await client.call_tool("embed_text", {"text": text, "include_vectors": False})
            seconds.append(time.perf_counter() - started)
        return seconds


async def loaded(
    server: HttpServer, clients: int, batches: list[list[str]], texts: list[str]
) -> tuple[float, list[float]]:
    """`clients` clients share the batches; each calls embed_text before and after each of its batches."""
    one_text: list[float] = []
    mine = [batches[i::clients] for i in range(clients)]
    words = iter(texts)

    async def one_client(own: list[list[str]]) -> None:
        async with server.client(None) as client:
            await client.list_tools()
            for batch in own:
                for call in ("text", "batch", "text"):
                    if call == "batch":
                        answer = await client.call_tool("embed_batch", {"texts": batch, "encoding": "base64"})
                        assert not answer.is_error, answer.content
                        continue
                    started = time.perf_counter()
                    answer = await client.call_tool("embed_text", {"text": next(words), "include_vectors": False})
                    one_text.append(time.perf_counter() - started)
                    assert not answer.is_error, answer.content

    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for own in mine:
            tasks.start_soon(one_client, own)
    return sum(map(len, batches)) / (time.perf_counter() - started), one_text


async def stdio_server_rss(data_dir: Path) -> float:
    """Peak RSS of one stdio server process after one embedding call (its model loaded)."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
        "SIGNAL_HUB_CACHE": "off",
        "PYTHONPATH": str(ROOT),
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "server"], env=env, cwd=ROOT)
    before = set(_children())
    async with Client(params, mode="legacy", read_timeout_seconds=300) as client:
        await client.call_tool("embed_batch", {"texts": code_chunks(BATCH, lines=10), "encoding": "base64"})
        new = [pid for pid in _children() if pid not in before]
        return max(rss_mb(pid) for pid in new)


def _children() -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


async def main(batches: int, client_counts: list[int], lines: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir, cache=False)
        most = max(batches, *client_counts)
        chunks = code_chunks(BATCH * most, lines=lines)
        every = [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]
        texts = [f"def helper_{i}(value): return value + {i}" for i in range(10_000)]
        reference = [await in_process(settings, every[:batches])]
        print(f"in-process: {reference[0]:.1f} chunks/s", file=sys.stderr)
        shared_mb = float("nan")
        with HttpServer(data_dir, env={"SIGNAL_HUB_CACHE": "off"}) as server:
            assert server.process is not None
            idle = await idle_latency(server, texts[:20])
            texts = texts[20:]
            rows = []
            for clients in client_counts:
                # At least one batch a client, and never fewer batches than the in-process run.
                rate, one_text = await loaded(server, clients, every[: max(batches, clients)], texts)
                texts = texts[len(one_text) :]
                rows.append((clients, rate, one_text))
                if clients == 8:
                    shared_mb = rss_mb(server.process.pid)
                print(f"{clients} clients: {rate:.1f} chunks/s", file=sys.stderr)
            status = server.stop()
        reference.append(await in_process(settings, every[:batches]))
        stdio_mb = await stdio_server_rss(data_dir)
    base = statistics.mean(reference)
    idle_p50, idle_p95 = percentile(idle, 0.5), percentile(idle, 0.95)
    print(f"in-process batch throughput: {reference[0]:.1f} and {reference[1]:.1f} chunks/s (mean {base:.1f})")
    print(f"idle one-text embed_text over HTTP: p50 {idle_p50 * 1000:.0f} ms, p95 {idle_p95 * 1000:.0f} ms")
    print("clients | batch throughput vs in-process | one-text p50 vs idle | one-text p95 vs idle")
    for clients, rate, one_text in rows:
        p50, p95 = percentile(one_text, 0.5), percentile(one_text, 0.95)
        print(
            f"{clients:7d} | {rate / base:.2f}x ({rate:.1f} chunks/s) | {p50 / idle_p50:.1f}x ({p50 * 1000:.0f} ms) "
            f"| {p95 / idle_p95:.1f}x ({p95 * 1000:.0f} ms)"
        )
    print(
        f"memory: one HTTP server with 8 clients {shared_mb:.0f} MB peak RSS; one stdio server {stdio_mb:.0f} MB, "
        f"8 of them {8 * stdio_mb:.0f} MB: ratio {shared_mb / (8 * stdio_mb):.2f}"
    )
    print(f"server exit status after SIGTERM: {status}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="batches of 100 chunks, at least (default 2)")
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated (default 1,8,32)")
    parser.add_argument("--lines", type=int, default=10, help="lines per code chunk (default 10: a bounded run)")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    anyio.run(main, args.batches, counts, args.lines)
