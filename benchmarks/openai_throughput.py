"""Throughput of the OpenAI provider against a rate-limited loopback server, and of a naive client.

    .venv/bin/python -m benchmarks.openai_throughput            # defaults below
    .venv/bin/python -m benchmarks.openai_throughput --chunks 3000 --time-scale 10 --naive-chunks 300

The loopback server enforces `--rpm` and `--tpm` with token buckets that, like an idle account's,
start full; `--time-scale` compresses time (10: a virtual minute lasts 6 real seconds) and
`--latency` adds the per-request time an answer takes (virtual seconds, compressed likewise).
Every rate below is in embeddings per *virtual* minute.

The ceiling is what the limits allow for this corpus: with buckets that start full, the fastest
possible run needs `max((tokens - tpm) / tpm, (requests - rpm) / rpm)` minutes, tokens as the
server counts them and requests as few as its 2048-input / 300k-token caps allow. The naive
baseline sends one text per request, one request at a time, and sleeps as told on a 429.

Target: achieved / ceiling >= 90 %, 429s < 2 % of requests, no item lost or reordered.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import numpy as np
import openai

from benchmarks.corpus import code_chunks
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.remote.batching import OPENAI_LIMITS, plan_batches
from providers.remote.ratelimit import parse_retry_after
from tests.loopback_openai import LoopbackOpenAI, count_tokens, embedding_for

KEY = "sk-benchmark"
MODEL = "text-embedding-3-small"


@dataclass
class Run:
    items: int
    seconds: float
    requests: int
    rate_limited: int
    lost: int = 0

    def per_virtual_minute(self, time_scale: float) -> float:
        return self.items / (self.seconds * time_scale / 60)


def ceiling_minutes(server_counts: list[int], rpm: int, tpm: int) -> float:
    """The shortest run, in virtual minutes, that the rate limits allow for these texts."""
    fewest_requests = len(plan_batches(server_counts, OPENAI_LIMITS))
    return max((sum(server_counts) - tpm) / tpm, (fewest_requests - rpm) / rpm, 0.0)


def mismatched(vectors: np.ndarray, chunks: list[str]) -> int:
    """Rows that are not the vector of the text at that position (lost, swapped or damaged)."""
    expected = np.stack([embedding_for(chunk, MODEL) for chunk in chunks])
    return int((np.abs(vectors - expected).max(axis=1) > 1e-5).sum())


async def provider_run(
    server: LoopbackOpenAI, chunks: list[str], args: argparse.Namespace, *, request_tokens: int | None, learn: bool
) -> Run:
    options = OpenAIOptions(
        rpm=None if learn else args.rpm,
        tpm=None if learn else args.tpm,
        rate_window=60 / args.time_scale,
        concurrency=args.concurrency,
        request_tokens=request_tokens,
    )
    provider = OpenAIProvider(MODEL, api_key=KEY, base_url=server.base_url, options=options)
    try:
        started = time.perf_counter()
        result = await provider.embed(chunks)
        seconds = time.perf_counter() - started
    finally:
        await provider.aclose()
    return Run(
        len(chunks), seconds, server.request_count, server.rate_limited_count, mismatched(result.vectors, chunks)
    )


async def naive_run(server: LoopbackOpenAI, chunks: list[str]) -> Run:
    """One text per request, one request at a time; on a 429 sleep as told and send it again."""
    client = openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    vectors = []
    try:
        started = time.perf_counter()
        for chunk in chunks:
            while True:
                try:
                    response = await client.embeddings.create(input=[chunk], model=MODEL, encoding_format="float")
                    break
                except openai.RateLimitError as exc:
                    await anyio.sleep(parse_retry_after(exc.response.headers) or 1.0)
            vectors.append(response.data[0].embedding)
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    return Run(
        len(chunks), seconds, server.request_count, server.rate_limited_count, mismatched(np.array(vectors), chunks)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=6000, help="40-line chunks of stdlib source to embed")
    parser.add_argument("--naive-chunks", type=int, default=300, help="chunks the naive baseline embeds")
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--tpm", type=int, default=1_000_000)
    parser.add_argument("--time-scale", type=float, default=5.0, help="virtual minutes per real minute")
    parser.add_argument("--latency", type=float, default=0.3, help="virtual seconds each answer takes")
    parser.add_argument("--concurrency", type=int, default=OpenAIOptions().concurrency)
    parser.add_argument("--request-tokens", type=int, default=None, help="tokens per request at most")
    parser.add_argument("--learn-limits", action="store_true", help="give the client no limits: learn the headers'")
    parser.add_argument("--sweep", action="store_true", help="also compare request sizes")
    args = parser.parse_args(argv)

    chunks = code_chunks(args.chunks)
    server_counts = [count_tokens(chunk) for chunk in chunks]
    minutes = ceiling_minutes(server_counts, args.rpm, args.tpm)
    ceiling = len(chunks) / minutes if minutes > 0 else math.inf
    server_options: dict[str, Any] = {
        "rpm": args.rpm,
        "tpm": args.tpm,
        "time_scale": args.time_scale,
        "latency": args.latency / args.time_scale,
    }

    def measure(request_tokens: int | None = args.request_tokens, learn: bool = args.learn_limits) -> Run:
        with LoopbackOpenAI(api_key=KEY, **server_options) as server:
            return anyio.run(partial(provider_run, server, chunks, args, request_tokens=request_tokens, learn=learn))

    ours = measure()
    with LoopbackOpenAI(api_key=KEY, **server_options) as server:
        naive = anyio.run(naive_run, server, chunks[: args.naive_chunks])

    achieved = ours.per_virtual_minute(args.time_scale)
    baseline = naive.per_virtual_minute(args.time_scale)
    print(f"corpus: {len(chunks)} chunks of 40 lines, {sum(server_counts):,} tokens as the server counts them")
    print(f"limits: {args.rpm:,} RPM, {args.tpm:,} TPM, time x{args.time_scale:g}, latency {args.latency:g} s")
    print(f"ceiling:            {ceiling:10,.0f} embeddings/min  (best run {minutes:.2f} min)")
    steady = len(chunks) / max(
        sum(server_counts) / args.tpm, len(plan_batches(server_counts, OPENAI_LIMITS)) / args.rpm
    )
    print(f"  (once the initial full bucket is spent: {steady:,.0f} embeddings/min)")
    print(f"achieved:           {achieved:10,.0f} embeddings/min  ({ours.seconds:.2f} s real)")
    print(f"achieved/ceiling:   {achieved / ceiling:10.1%}")
    print(f"requests sent:      {ours.requests:10,}")
    print(f"429s received:      {ours.rate_limited:10,}  ({ours.rate_limited / max(1, ours.requests):.2%} of requests)")
    print(f"items lost/misplaced: {ours.lost:8,}")
    print(
        f"naive baseline:     {baseline:10,.0f} embeddings/min  ({naive.items} chunks, {naive.requests} requests, "
        f"{naive.rate_limited} 429s, {naive.lost} lost)"
    )
    print(f"speed-up vs naive:  {achieved / baseline:10.1f}x")

    if args.sweep:
        # Under a TPM limit, do a few big requests or many small ones get more done?
        print("\nrequest size sweep (tokens per request at most -> achieved/ceiling, requests, 429s):")
        for request_tokens in (300_000, 125_000, 62_500, None, 15_000):
            run = measure(request_tokens, learn=False)
            label = f"{request_tokens:,}" if request_tokens else "default"
            share = run.rate_limited / max(1, run.requests)
            print(
                f"  {label:>9}: {run.per_virtual_minute(args.time_scale) / ceiling:6.1%}  "
                f"{run.requests:4} requests  {run.rate_limited:3} 429s ({share:.1%})  {run.lost} lost"
            )


if __name__ == "__main__":
    main()
