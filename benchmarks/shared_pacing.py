"""Several server processes on one OpenAI key, paced together through the data directory.

    .venv/bin/python -m benchmarks.shared_pacing                      # 1, 2 and 3 processes, x10 clock
    .venv/bin/python -m benchmarks.shared_pacing --real-time          # a 60 s window at 30,000 TPM
    .venv/bin/python -m benchmarks.shared_pacing --separate-dirs      # one data directory each
    .venv/bin/python -m benchmarks.shared_pacing --processes 2 --no-share   # each paces itself

For each N, a fresh loopback server (buckets start full, limits only in its headers) and a fresh
data directory; N batch processes (`OpenAIProvider.from_settings`, as a server builds it) embed
a corpus that spans `--minutes` minutes of the TPM limit between them, and one agent process
makes a one-text call every `--agent-interval` seconds, first idle, then during the run. Time
is compressed (`--time-scale` virtual minutes per real minute); latencies are real seconds.
`--real-time` runs on the real clock, as the API does (a small TPM, a few minutes): the first
minute, before the limits are learnt, and the buckets' refill between requests are then as in
production. The 429s of the first (virtual) minute are counted apart. `--separate-dirs` gives
each process a data directory of its own, so their pacers do not meet.

The ceiling is what the limits allow: with a full bucket at the start, the tokens served need at
least `(tokens - tpm) / tpm` minutes. Targets, for every N: >= 0.90 of the ceiling, 429s <= 2 %
of requests, the one-text call's p95 <= its idle p95 + 2 s.

The coordination overhead is measured apart: the time spent in acquire + settle +
update_from_headers on unlimited buckets, shared through SQLite vs a process's own `RateLimiter`:
one process; four at 100 requests a second each (a busy key); four back to back (a stress test,
where they mostly wait for each other's lock and for the 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks.corpus import code_chunks
from providers.errors import ProviderError
from providers.openai import OpenAIOptions, OpenAIProvider, openai_options
from providers.remote.pacing import PACER_FILE, SharedPacer
from providers.remote.ratelimit import RateLimiter
from providers.settings import Settings
from tests.loopback_openai import LoopbackOpenAI, count_tokens

KEY = "sk-benchmark-shared"
HEADERS = {
    "x-ratelimit-limit-requests": "1000000000",
    "x-ratelimit-remaining-requests": "999999999",
    "x-ratelimit-reset-requests": "0s",
    "x-ratelimit-limit-tokens": "1000000000",
    "x-ratelimit-remaining-tokens": "999999000",
    "x-ratelimit-reset-tokens": "0s",
}


def corpus(tokens: int) -> list[str]:
    """Code chunks holding at least `tokens` tokens as the server counts them."""
    chunks = code_chunks(20_000)
    total = 0
    for end, chunk in enumerate(chunks, 1):
        total += count_tokens(chunk)
        if total >= tokens:
            return chunks[:end]
    raise ValueError(f"the corpus holds only {total} tokens")


def settings(args: argparse.Namespace) -> Settings:
    return Settings(
        provider="openai",
        data_dir=Path(args.data_dir),
        openai_base_url=args.base_url,
        openai_api_key=KEY,
        provider_options={"openai": OpenAIOptions(rate_window=60 / args.time_scale)},
        shared_pacing=not args.no_share,
    )


class TimedLoopback(LoopbackOpenAI):
    """The loopback server, noting when each answer left and its status."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: list[tuple[float, int | None]] = []
        self.refusals: list[tuple[float, str]] = []

    def handle(self, path: str, authorization: str | None, body: bytes) -> Any:
        reply = super().handle(path, authorization, body)
        self.answers.append((time.monotonic(), reply.status if reply else None))
        if reply is not None and reply.status == 429:
            self.refusals.append((time.monotonic(), str(reply.body.get("error", {}).get("message", ""))[:90]))
        return reply


# the processes


async def batch_worker(args: argparse.Namespace) -> None:
    config = settings(args)
    provider = OpenAIProvider.from_settings(config, options=openai_options(config))
    chunks = corpus(args.corpus_tokens)[args.part :: args.parts]
    await provider.estimate_tokens(chunks[:1])  # the tokenizer loaded before the start
    print("ready", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    started = time.time()
    try:
        texts, failed = (await provider.embed(chunks)).count, 0
    except ProviderError as exc:  # without shared pacing, a process may give up on its 429s
        texts, failed = len(exc.partial_indexes), 1
        print(f"batch {args.part} gave up: {exc}", file=sys.stderr, flush=True)
    print(json.dumps({"started": started, "ended": time.time(), "texts": texts, "failed": failed}), flush=True)
    await provider.aclose()


async def agent_worker(args: argparse.Namespace) -> None:
    config = settings(args)
    provider = OpenAIProvider.from_settings(config, options=openai_options(config))
    texts = iter(code_chunks(20_000)[-5000:])  # not in any batch's share

    failed = 0

    async def one_text_call() -> float:
        nonlocal failed
        started = time.perf_counter()
        try:
            await provider.embed([next(texts)])
        except ProviderError:  # paced alone, an agent's call may give up on its 429s too
            failed += 1
        return time.perf_counter() - started

    await one_text_call()  # warm: tokenizer, connection
    idle = []
    for _ in range(args.idle_calls):
        idle.append(await one_text_call())
        await anyio.sleep(args.agent_interval)
    print("ready", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    loaded = []
    stop = Path(args.data_dir) / "stop"
    while not stop.exists():
        loaded.append(await one_text_call())
        await anyio.sleep(args.agent_interval)
    print(json.dumps({"idle": idle, "loaded": loaded, "failed": failed}), flush=True)
    await provider.aclose()


async def overhead_worker(args: argparse.Namespace) -> None:
    shared = SharedPacer(Path(args.data_dir) / PACER_FILE, "http://overhead.test/v1", KEY)
    own = RateLimiter()
    result = {}
    for name, limiter in (("shared", shared), ("own", own)):
        limiter.update_from_headers(HEADERS)
        spent = 0.0
        for _ in range(args.cycles):
            started = time.perf_counter()
            charged = await limiter.acquire(500)
            limiter.settle(charged, 500, 480)
            limiter.update_from_headers(HEADERS)
            spent += time.perf_counter() - started
            if args.overhead_rate:  # the request's round trip, outside the pacer
                await anyio.sleep(1 / args.overhead_rate)
        result[name] = spent / args.cycles * 1000
    shared.close()
    print(json.dumps(result), flush=True)


# the parent


def spawn(mode: str, args: argparse.Namespace, *extra: str, data_dir: str | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "benchmarks.shared_pacing", "--mode", mode]
    command += ["--data-dir", data_dir or args.data_dir]
    command += ["--time-scale", str(args.time_scale), "--corpus-tokens", str(args.corpus_tokens)]
    command += ["--agent-interval", str(args.agent_interval), "--idle-calls", str(args.idle_calls)]
    command += ["--cycles", str(args.cycles), "--overhead-rate", str(args.overhead_rate)]
    command += [*(["--no-share"] if args.no_share else []), *extra]
    if args.base_url:
        command += ["--base-url", args.base_url]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def wait_ready(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a worker failed to start (exit {process.wait()})")


def last_json(process: subprocess.Popen[str], timeout: float) -> Any:
    out, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"a worker failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def run(n: int, args: argparse.Namespace) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as data_dir,
        TimedLoopback(
            api_key=KEY, rpm=args.rpm, tpm=args.tpm, time_scale=args.time_scale, latency=args.latency / args.time_scale
        ) as server,
    ):
        args.data_dir, args.base_url = data_dir, server.base_url
        agent = spawn("agent", args)
        wait_ready([agent])  # its idle calls are done
        own = [str(Path(data_dir) / f"process-{part}") if args.separate_dirs else None for part in range(n)]
        batches = [
            spawn("batch", args, "--part", str(part), "--parts", str(n), data_dir=own[part]) for part in range(n)
        ]
        wait_ready(batches)
        server.reset_counters()  # the agent's idle calls are not part of the run
        server.answers.clear()
        go = time.monotonic()
        for process in [*batches, agent]:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [last_json(process, timeout=args.timeout) for process in batches]
        (Path(data_dir) / "stop").touch()
        latencies = last_json(agent, timeout=60)
        tokens, requests, refused = server.tokens_served, server.request_count, server.rate_limited_count
        minute = 60 / args.time_scale
        first = [status for at, status in server.answers if at - go <= minute]
        if args.verbose:
            for at, message in server.refusals:
                print(f"    429 at {at - go:6.1f} s: {message}", flush=True)
    seconds = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    minutes = seconds * args.time_scale / 60
    best = max((tokens - args.tpm) / args.tpm, 0.0)
    return {
        "texts": sum(r["texts"] for r in reports),
        "failed": sum(r["failed"] for r in reports),
        "tokens": tokens,
        "seconds": seconds,
        "ceiling": best / minutes,
        "requests": requests,
        "refused": refused,
        "first_requests": len(first),
        "first_refused": sum(1 for status in first if status == 429),
        "idle_p95": p95(latencies["idle"]),
        "loaded_p95": p95(latencies["loaded"]),
        "loaded_calls": len(latencies["loaded"]),
        "agent_failed": latencies.get("failed", 0),
    }


def overhead(processes: int, rate: float, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        args.data_dir, args.base_url, args.overhead_rate = data_dir, "", rate
        started = [spawn("overhead", args) for _ in range(processes)]
        results = [last_json(process, timeout=args.timeout) for process in started]
    return statistics.mean(r["shared"] for r in results), statistics.mean(r["own"] for r in results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2,3", help="batch process counts to measure")
    parser.add_argument("--rpm", type=int, default=None, help="5,000 (x10), 500 (--real-time)")
    parser.add_argument("--tpm", type=int, default=None, help="300,000 (x10), 30,000 (--real-time)")
    parser.add_argument("--minutes", type=float, default=None, help="minutes of TPM the corpus needs: 5, or 2.5")
    parser.add_argument("--time-scale", type=float, default=10.0, help="virtual minutes per real minute")
    parser.add_argument("--real-time", action="store_true", help="the real clock: a 60 s window, small limits")
    parser.add_argument("--separate-dirs", action="store_true", help="each batch process has its own data directory")
    parser.add_argument("--no-overhead", action="store_true", help="skip the coordination overhead test")
    parser.add_argument("--verbose", action="store_true", help="print when each 429 came and why")
    parser.add_argument("--latency", type=float, default=0.3, help="virtual seconds each answer takes")
    parser.add_argument("--agent-interval", type=float, default=0.25, help="real seconds between one-text calls")
    parser.add_argument("--idle-calls", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=2000, help="pacer cycles per process in the overhead test")
    parser.add_argument("--overhead-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--no-share", action="store_true", help="each process paces itself (the old way)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--mode", choices=["parent", "batch", "agent", "overhead"], default="parent")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--base-url", default="")
    parser.add_argument("--corpus-tokens", type=int, default=0)
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    args = parser.parse_args(argv)
    workers = {"batch": batch_worker, "agent": agent_worker, "overhead": overhead_worker}
    if args.mode in workers:
        anyio.run(workers[args.mode], args)
        return

    if args.real_time:
        args.time_scale = 1.0
    defaults = (500, 30_000, 2.5) if args.real_time else (5000, 300_000, 5.0)
    args.rpm, args.tpm, args.minutes = (
        given if given is not None else default
        for given, default in zip((args.rpm, args.tpm, args.minutes), defaults, strict=True)
    )
    args.corpus_tokens = int(args.minutes * args.tpm)
    texts = corpus(args.corpus_tokens)
    print(f"corpus: {len(texts)} chunks, {sum(map(count_tokens, texts)):,} tokens as the server counts them")
    print(
        f"limits: {args.rpm:,} RPM, {args.tpm:,} TPM (learnt from the headers), time x{args.time_scale:g}, "
        f"latency {args.latency:g} s; pacing {'per process' if args.no_share else 'shared'}"
        + ("; one data directory per process" if args.separate_dirs else "")
    )
    print("one-text calls: a separate agent process, every", args.agent_interval, "s (latencies in real seconds)")
    print(
        f"{'N':>2} {'real s':>7} {'of ceiling':>10} {'requests':>8} {'429s':>5} {'429/req':>8} "
        f"{'1st min':>9} {'idle p95':>8} {'run p95':>8} {'calls':>5}"
    )
    for n in (int(part) for part in args.processes.split(",") if part):
        r = run(n, args)
        print(
            f"{n:>2} {r['seconds']:7.1f} {r['ceiling']:10.1%} {r['requests']:8.0f} {r['refused']:5.0f} "
            f"{r['refused'] / max(1, r['requests']):8.2%} {r['first_refused']:>3.0f}/{r['first_requests']:<5.0f} "
            f"{r['idle_p95']:8.3f} {r['loaded_p95']:8.3f} "
            f"{r['loaded_calls']:5.0f}"
            + (f"  {r['failed']:.0f} process(es) gave up" if r["failed"] else "")
            + (f"  {r['agent_failed']:.0f} one-text call(s) failed" if r["agent_failed"] else ""),
            flush=True,
        )
    if args.no_overhead:
        return
    print("coordination (acquire + settle + update_from_headers, ms per request; shared vs alone):")
    for processes, rate in ((1, 0.0), (4, 100.0), (4, 0.0)):
        shared, own = overhead(processes, rate, args)
        pace = f"{rate:.0f} requests/s each" if rate else "back to back (stress)"
        who = f"{processes} process{'es' if processes > 1 else ''}"
        print(f"  {who}, {pace}: {shared:.3f} vs {own:.3f} (+{shared - own:.3f})")


if __name__ == "__main__":
    main()
