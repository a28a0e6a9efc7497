"""The Batch API engine against the synchronous one, on the loopback server's compressed batch clock.

    .venv/bin/python -m benchmarks.batch_api                       # 100,000 code chunks, kill test on 60,000
    .venv/bin/python -m benchmarks.batch_api --chunks 5000 --kill-chunks 2000 --time-scale 3600

1. The same code chunks (8-line chunks of the standard library) through the Batch API engine
   and through the synchronous OpenAI provider: USD from the usage each reported (the ratio
   must be 0.50), requests and files sent, wall time. Batches run on the loopback's clock:
   validating 2 min, in progress 30 min, finalizing 5 min (virtual), `--time-scale` virtual
   seconds per real second. Both runs must return identical vectors.
2. A run in a subprocess is killed with SIGKILL while it polls, then started again on the same
   data directory: no batch may be submitted twice, and its vectors and spend must equal those
   of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
import numpy as np
import openai

from benchmarks.corpus import code_chunks
from providers.batch_api import BatchApiEngine, BatchApiOptions, BatchState
from providers.openai import OpenAIOptions, OpenAIProvider
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger
from tests.loopback_openai import LoopbackOpenAI

KEY = "sk-benchmark"
MODEL = "text-embedding-3-small"
CHUNK_LINES = 8
_POOL = 108_000  # 8-line chunks of the standard library, of which over 100,000 are distinct


def engine_for(base_url: str, data_dir: Path, dimensions: int, time_scale: float) -> BatchApiEngine:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    options = BatchApiOptions(dimensions=dimensions, poll_initial=60 / time_scale, poll_max=600 / time_scale)
    return BatchApiEngine(
        client,
        state=BatchState(data_dir / "batch_jobs.sqlite3"),
        cache=EmbeddingCache(data_dir / "cache.sqlite3"),
        ledger=CostLedger(data_dir / "ledger.sqlite3"),
        options=options,
        model=MODEL,
    )


async def batch_run(base_url: str, chunks: list[str], data_dir: Path, args: argparse.Namespace) -> dict[str, object]:
    engine = engine_for(base_url, data_dir, args.dimensions, args.time_scale)
    started = time.perf_counter()
    result = await engine.run("benchmark", chunks)
    seconds = time.perf_counter() - started
    assert engine.ledger is not None
    report = engine.ledger.report()
    await engine.remote.client.close()
    return {
        "vectors": result.vectors,
        "missing": len(result.missing),
        "usd": report.total_usd,
        "tokens": report.total.tokens,
        "requests": result.status.requests_sent,
        "files": result.status.files,
        "seconds": seconds,
    }


async def sync_run(base_url: str, chunks: list[str], args: argparse.Namespace) -> dict[str, object]:
    provider = OpenAIProvider(MODEL, api_key=KEY, base_url=base_url, options=OpenAIOptions(dimensions=args.dimensions))
    started = time.perf_counter()
    result = await provider.embed(chunks)
    seconds = time.perf_counter() - started
    await provider.aclose()
    return {
        "vectors": result.vectors,
        "usd": result.cost_usd,
        "tokens": result.tokens,
        "requests": result.requests,
        "seconds": seconds,
    }


def distinct_chunks(n: int) -> list[str]:
    """The first `n` distinct code chunks: both engines then send (and are billed for) the same texts."""
    pool = list(dict.fromkeys(code_chunks(_POOL, lines=CHUNK_LINES)))
    if len(pool) < n:
        raise SystemExit(f"the standard library holds only {len(pool):,} distinct {CHUNK_LINES}-line chunks")
    return pool[:n]


def worker(args: argparse.Namespace) -> None:
    """One batch run in its own process (the kill test's victim), writing its vectors to `--out`."""
    chunks = distinct_chunks(args.chunks)
    outcome = anyio.run(batch_run, args.base_url, chunks, Path(args.data_dir), args)
    np.save(args.out, outcome["vectors"])
    print(f"{outcome['usd']!r}", flush=True)


def spawn(server: LoopbackOpenAI, data_dir: Path, out: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "benchmarks.batch_api", "--worker", "--base-url", server.base_url]
    command += ["--data-dir", str(data_dir), "--out", str(out), "--chunks", str(args.kill_chunks)]
    command += ["--dimensions", str(args.dimensions), "--time-scale", str(args.time_scale)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])


def polling(data_dir: Path) -> bool:
    """True once the worker has recorded a batch as running remotely: it is in its polling loop."""
    path = data_dir / "batch_jobs.sqlite3"
    if not path.exists():
        return False
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM batches WHERE status = 'in_progress'").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def kill_test(server: LoopbackOpenAI, args: argparse.Namespace, root: Path) -> None:
    created_before = len(server.batches.created_inputs)
    calm = spawn(server, root / "calm", root / "calm.npy", args)
    calm_usd = float((calm.communicate(timeout=600)[0] or "nan").strip())
    calm_inputs = server.batches.created_inputs[created_before:]

    created_before = len(server.batches.created_inputs)
    victim = spawn(server, root / "killed", root / "killed.npy", args)
    deadline = time.monotonic() + 600
    while not polling(root / "killed") and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed_while_polling = victim.poll() is None
    if killed_while_polling:
        os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    at_kill = len(server.batches.created_inputs) - created_before
    again = spawn(server, root / "killed", root / "killed.npy", args)
    again_usd = float((again.communicate(timeout=600)[0] or "nan").strip())
    killed_inputs = server.batches.created_inputs[created_before:]

    twice = sum(count - 1 for count in Counter(killed_inputs).values() if count > 1)
    same = np.array_equal(np.load(root / "calm.npy"), np.load(root / "killed.npy"))
    print(f"\nkill -9 during polling ({args.kill_chunks:,} chunks, killed while polling: {killed_while_polling})")
    print(
        f"  batches created: uninterrupted {len(calm_inputs)}, killed run {at_kill} before the kill, "
        f"{len(killed_inputs)} in all"
    )
    print(f"  batches submitted twice:      {twice}")
    print(f"  output equal to uninterrupted: {same}")
    print(f"  USD uninterrupted / killed:   {calm_usd:.6f} / {again_usd:.6f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--kill-chunks", type=int, default=60_000, help="two batches: one full, one partial")
    parser.add_argument("--dimensions", type=int, default=256, help="shorter vectors keep output files small")
    parser.add_argument("--time-scale", type=float, default=3600.0, help="virtual batch seconds per real second")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    chunks = distinct_chunks(args.chunks)
    with LoopbackOpenAI(api_key=KEY, time_scale=args.time_scale) as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batch = anyio.run(batch_run, server.base_url, chunks, root / "batch", args)
        batch_lines, files = server.batches.request_lines, server.batches.files_uploaded
        batches, span_h = server.batches.batches_created, server.batches.virtual_span() / 3600
        server.reset_counters()
        sync = anyio.run(sync_run, server.base_url, chunks, args)
        ratio = float(batch["usd"]) / float(sync["usd"])  # type: ignore[arg-type]
        same = np.allclose(batch["vectors"], sync["vectors"], atol=1e-6)  # type: ignore[arg-type]
        print(
            f"corpus: {len(chunks):,} chunks of {CHUNK_LINES} lines, {args.dimensions}-d vectors, "
            f"batch clock x{args.time_scale:g}"
        )
        print(f"{'engine':<12}{'USD':>12}{'tokens':>14}{'requests':>10}{'files':>7}{'wall s':>9}  batch clock")
        print(
            f"{'batch-api':<12}{batch['usd']:>12.6f}{batch['tokens']:>14,}{batch_lines:>10,}{files:>7}"
            f"{batch['seconds']:>9.2f}  {span_h:.2f} h virtual, {batches} batches"
        )
        print(
            f"{'sync':<12}{sync['usd']:>12.6f}{sync['tokens']:>14,}{sync['requests']:>10,}{0:>7}"
            f"{sync['seconds']:>9.2f}  (unthrottled loopback; real accounts are TPM-bound)"
        )
        print(
            f"USD ratio batch/sync: {ratio:.4f} (from reported usage); vectors identical: {same}; "
            f"missing: {batch['missing']}"
        )
        kill_test(server, args, root)


if __name__ == "__main__":
    main()
