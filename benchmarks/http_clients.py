"""One HTTP server shared by 1, 8 and 32 clients, against in-process embedding and against idle.

    python -m benchmarks.http_clients [--clients 1,8,32] [--batches-per-client 2] [--least 8] [--ramp-s 1]
                                      [--rounds 3] [--one-process]

Each client is its own process, as each MCP host is, and mixes one-text `embed_text` calls with
`embed_batch` calls of 100 code chunks (base64 vectors, cache off so every text is embedded): a
one-text call, a batch, a one-text call, for each of its batches. The clients start evenly over
`--ramp-s` (a load test's spawn rate; with 0 they all send their first call in the same instant).
Printed, all measured in this run:
- batch throughput over HTTP against the same calls (the same texts: each client's one-text calls
  and batches, one after another) made in-process just before and just after each scenario;
- one-text p50/p95 under load against the same call from one client on the idle server, measured
  before each round and at the end;
- memory: the server's peak RSS with 8 clients against 8 x the RSS of one stdio server that has
  embedded (8 stdio servers share nothing, so each holds its own model).
Every scenario runs `--rounds` times, the in-process reference beside it each time: this shared
machine's speed drifts by 15% from one minute to the next, so one round's ratio is noise; the
median of the rounds is printed, with their range.

`--one-process` runs every client in this process's event loop instead (how the benchmark ran
before): then the clients' own loop, not the server, sets much of the one-text latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from providers.local_model.encoders import usable_cores
from tests.http_server import ROOT, HttpServer

BATCH = 100
_IDLE_CALLS = 20
_START_TIMEOUT_S = 300


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def in_process(service: EmbeddingService, batches_of: list[list[list[str]]], texts_of: list[list[str]]) -> float:
    """Chunks a second of batches, making the clients' calls (the same texts) one after another in this process."""
    started = time.perf_counter()
    for batches, texts in zip(batches_of, texts_of, strict=True):
        words = iter(texts)
        for batch in batches:
            await service.embed([next(words)])
            await service.embed(batch)
            await service.embed([next(words)])
    return sum(len(batch) for batches in batches_of for batch in batches) / (time.perf_counter() - started)


async def run_client(
    url: str, batches: list[list[str]], texts: list[str], delay_s: float, started: anyio.Event | None
) -> tuple[float, float, float, list[float]]:
    """One client's calls (text, batch, text for each batch) from `delay_s` after the start: when its
    calls began and ended (`time.time()`, comparable across processes), the CPU seconds this process
    used meanwhile, and its one-text latencies."""
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    one_text: list[float] = []
    words = iter(texts)
    async with create_mcp_http_client() as http, Client(streamable_http_client(url, http_client=http)) as client:
        await client.list_tools()
        # The client's own first-call work (its result models, the tools' output schemas) is done
        # now, not timed: a host that has been running a while has done it long before.
        await client.call_tool("embed_text", {"text": "warm up", "include_vectors": False})
        await client.call_tool("embed_batch", {"texts": ["warm up"], "encoding": "base64"})
        if started is None:
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)  # "go", to every client at once
        else:
            await started.wait()
        await anyio.sleep(delay_s)
        began, cpu = time.time(), time.process_time()
        for batch in batches:  # an empty batch: one one-text call alone
            for call in ("text", "batch", "text") if batch else ("text",):
                if call == "batch":
                    answer = await client.call_tool("embed_batch", {"texts": batch, "encoding": "base64"})
                    assert not answer.is_error, answer.content
                    continue
                sent = time.perf_counter()
                answer = await client.call_tool("embed_text", {"text": next(words), "include_vectors": False})
                one_text.append(time.perf_counter() - sent)
                assert not answer.is_error, answer.content
        return began, time.time(), time.process_time() - cpu, one_text


def _worker(url: str, work_file: str) -> None:
    work = json.loads(Path(work_file).read_text())
    began, ended, cpu_s, latencies = anyio.run(run_client, url, work["batches"], work["texts"], work["delay_s"], None)
    print(json.dumps({"began": began, "ended": ended, "cpu_s": cpu_s, "one_text": latencies}), flush=True)
    sys.stdin.readline()  # "exit", once every client is done: an exiting process takes CPU from the server


async def loaded(
    url: str,
    batches_of: list[list[list[str]]],
    texts_of: list[list[str]],
    work_dir: Path,
    *,
    one_process: bool,
    ramp_s: float = 0.0,
) -> tuple[float, float, list[float]]:
    """Client i starts `i * ramp_s / clients` after the first; chunks a second over the batches, the
    share of the machine's CPU the clients themselves used meanwhile, and every one-text latency."""
    chunks = sum(len(batch) for batches in batches_of for batch in batches)
    delays = [i * ramp_s / len(batches_of) for i in range(len(batches_of))]
    if one_process:
        go = anyio.Event()
        results: list[tuple[float, float, float, list[float]]] = []

        async def one(batches: list[list[str]], texts: list[str], delay_s: float) -> None:
            results.append(await run_client(url, batches, texts, delay_s, go))

        async with anyio.create_task_group() as tasks:
            for batches, texts, delay_s in zip(batches_of, texts_of, delays, strict=True):
                tasks.start_soon(one, batches, texts, delay_s)
            await anyio.sleep(2)  # every client connected and listed the tools (not timed)
            go.set()
    else:
        results = _in_processes(url, batches_of, texts_of, delays, work_dir)
    # From the first call's start to the last call's end, as the clients saw them.
    seconds = max(ended for _, ended, _, _ in results) - min(began for began, _, _, _ in results)
    clients_cpu = sum(cpu_s for _, _, cpu_s, _ in results) / (seconds * usable_cores())
    return chunks / seconds, clients_cpu, [latency for _, _, _, latencies in results for latency in latencies]


def _in_processes(
    url: str, batches_of: list[list[list[str]]], texts_of: list[list[str]], delays: list[float], work_dir: Path
) -> list[tuple[float, float, float, list[float]]]:
    workers = []
    for i, (batches, texts, delay_s) in enumerate(zip(batches_of, texts_of, delays, strict=True)):
        work = work_dir / f"client-{i}.json"
        work.write_text(json.dumps({"batches": batches, "texts": texts, "delay_s": delay_s}))
        command = [sys.executable, "-m", "benchmarks.http_clients", "--worker", url, str(work)]
        workers.append(subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        for worker in workers:  # bounded: a worker that cannot connect exits, closing its stdout
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", "a client did not start"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:  # bounded: a worker that fails exits, closing its stdout
            assert worker.stdout is not None
            found = json.loads(worker.stdout.readline())
            results.append((found["began"], found["ended"], found["cpu_s"], found["one_text"]))
        for worker in workers:
            worker.communicate("exit\n", timeout=_START_TIMEOUT_S)
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


async def idle_latency(url: str, work_dir: Path, texts: list[str], one_process: bool) -> list[float]:
    """One client alone on the server: `len(texts)` one-text calls."""
    _, _, latencies = await loaded(url, [[[] for _ in texts]], [texts], work_dir, one_process=one_process)
    return latencies


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


def _one_texts(start: int, count: int) -> list[str]:
    return [f"def helper_{i}(value): return value + {i}" for i in range(start, start + count)]


async def main(
    per_client: int, least: int, client_counts: list[int], lines: int, ramp_s: float, one_process: bool, rounds: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        # The server's configuration from this environment, so both sides run the same (say, with
        # SIGNAL_HUB_LOCAL_BATCH_PRIORITY=normal).
        settings = dataclasses.replace(Settings.from_env(os.environ), data_dir=data_dir, cache=False)
        chunks = code_chunks(BATCH * max(least, per_client * max(client_counts)), lines=lines)
        every = [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]
        next_text = 0
        rows: dict[int, list[tuple[float, float, float, list[float]]]] = {clients: [] for clients in client_counts}
        idle: list[float] = []
        shared_mb = float("nan")
        async with EmbeddingService(settings=settings) as service:
            await service.embed(["def warm_up(): pass"])
            with HttpServer(data_dir, env={"SIGNAL_HUB_CACHE": "off"}) as server:
                assert server.process is not None
                for round_number in range(1, rounds + 1):
                    idle += await idle_latency(server.url, data_dir, _one_texts(next_text, _IDLE_CALLS), one_process)
                    next_text += _IDLE_CALLS
                    for clients in client_counts:
                        batches = every[: max(least, per_client * clients)]
                        batches_of = [batches[i::clients] for i in range(clients)]
                        texts_of = []
                        for own in batches_of:
                            texts_of.append(_one_texts(next_text, 2 * len(own)))
                            next_text += 2 * len(own)
                        before = await in_process(service, batches_of, texts_of)
                        rate, clients_cpu, one_text = await loaded(
                            server.url, batches_of, texts_of, data_dir, one_process=one_process, ramp_s=ramp_s
                        )
                        if clients == 8:
                            shared_mb = rss_mb(server.process.pid)  # the peak so far
                        after = await in_process(service, batches_of, texts_of)
                        rows[clients].append((rate, (before + after) / 2, clients_cpu, one_text))
                        said = f"round {round_number}, {clients} clients: {rate:.1f} chunks/s"
                        print(f"{said}; in-process {before:.1f}, {after:.1f}", file=sys.stderr)
                idle += await idle_latency(server.url, data_dir, _one_texts(next_text, _IDLE_CALLS), one_process)
                status = server.stop()
        stdio_mb = await stdio_server_rss(data_dir)
    idle_p50, idle_p95 = percentile(idle, 0.5), percentile(idle, 0.95)
    where = "all clients in one process" if one_process else "one process per client"
    start = f"starting over {ramp_s:g} s" if ramp_s else "all starting together"
    print(
        f"{where}, {start}; batches of {BATCH} chunks of {lines} lines: "
        f"{per_client} per client, at least {least} a scenario; {rounds} round(s): medians (and ranges) of the rounds"
    )
    print(
        f"idle one-text embed_text (before each round and at the end): "
        f"p50 {idle_p50 * 1000:.0f} ms, p95 {idle_p95 * 1000:.0f} ms"
    )
    print(
        "clients | batch throughput vs in-process (same texts) | one-text p50 vs idle | one-text p95 vs idle "
        "| CPU the clients used"
    )
    for clients, measured in rows.items():
        throughput = [rate / base for rate, base, _, _ in measured]
        rate, base = statistics.median(m[0] for m in measured), statistics.median(m[1] for m in measured)
        p50s = [percentile(one_text, 0.5) for _, _, _, one_text in measured]
        p95s = [percentile(one_text, 0.95) for _, _, _, one_text in measured]
        print(
            f"{clients:7d} | {_median_range(throughput)} ({rate:.1f} vs {base:.1f} chunks/s) "
            f"| {_median_range([p / idle_p50 for p in p50s], '.1f')} ({statistics.median(p50s) * 1000:.0f} ms) "
            f"| {_median_range([p / idle_p95 for p in p95s], '.1f')} ({statistics.median(p95s) * 1000:.0f} ms) "
            f"| {statistics.median(cpu for _, _, cpu, _ in measured):.0%} of the machine"
        )
    print(
        f"memory: one HTTP server with 8 clients {shared_mb:.0f} MB peak RSS; one stdio server {stdio_mb:.0f} MB, "
        f"8 of them {8 * stdio_mb:.0f} MB: ratio {shared_mb / (8 * stdio_mb):.2f}"
    )
    print(f"server exit status after SIGTERM: {status}")


def _median_range(ratios: list[float], spec: str = ".2f") -> str:
    """`1.02x` for one round, `1.02x (0.95-1.10)` for several."""
    median = f"{statistics.median(ratios):{spec}}x"
    return median if len(ratios) == 1 else f"{median} ({min(ratios):{spec}}-{max(ratios):{spec}})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches-per-client", type=int, default=2, help="batches per client (default 2)")
    parser.add_argument("--least", type=int, default=8, help="batches a scenario has at least (default 8)")
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated (default 1,8,32)")
    parser.add_argument("--lines", type=int, default=10, help="lines per code chunk (default 10: a bounded run)")
    parser.add_argument(
        "--ramp-s", type=float, default=1.0, help="clients start evenly over this many seconds (default 1; 0: together)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every scenario; medians are printed (default 3)"
    )
    parser.add_argument("--one-process", action="store_true", help="every client in this process's event loop")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "WORK_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
    else:
        counts = [int(n) for n in args.clients.split(",")]
        anyio.run(
            main, args.batches_per_client, args.least, counts, args.lines, args.ramp_s, args.one_process, args.rounds
        )
