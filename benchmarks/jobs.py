"""A local embedding job through the MCP tools, killed half-way and resumed, with embed_text beside it.

    .venv/bin/python -m benchmarks.jobs [--chunks 10000] [--sample 300] [--format npy|jsonl]

A real MCP client starts the server over stdio (`python -m server`), measures `embed_text`
latency with nothing else running, starts a job over `--chunks` 40-line chunks of the standard
library, polls it, and measures `embed_text` again while the job runs. At about half-way it
kills the server with SIGKILL, starts it again, checks that the job shows `interrupted`, and
resumes it. Printed: latency p50/p95 idle and during the job (target: p95 during <= 3x idle),
the chunks the resumed run sent against those not yet cached at the kill (target: equal), and
whether the output is complete, in input order, and equal to a run without a kill (an
uncached `embed` run over a random sample of the chunks, with the job's thread count).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from mcp import Client, StdioServerParameters

from benchmarks.corpus import code_chunks, one_line_snippets
from providers.local_model.encoders import usable_cores
from providers.storage.cache import EmbeddingCache

ROOT = Path(__file__).resolve().parents[1]
SPACE = "local:all-MiniLM-L6-v2:384:l2"


def server_params(data_dir: Path, project: Path) -> StdioServerParameters:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
        "SIGNAL_HUB_JOB_ROOTS": str(project),
        "SIGNAL_HUB_PROVIDER": "local",
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "server"], env=env, cwd=ROOT)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content}")
    return result.structured_content  # type: ignore[no-any-return]


async def embed_latency(client: Client, text: str) -> float:
    started = time.perf_counter()
    await call(client, "embed_text", text=text)
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    return statistics.median(samples), cuts[18]


def server_pid(data_dir: Path, job_id: str) -> int:
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        owner = db.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    return int(owner.split(":")[1])


def read_output(project: Path, fmt: str) -> tuple[list[Any], np.ndarray]:
    if fmt == "npy":
        ids = [json.loads(line) for line in (project / "out.ids.jsonl").read_text().splitlines()]
        return [i["id"] if isinstance(i, dict) else i for i in ids], np.load(project / "out.npy")
    rows = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    return [row["id"] for row in rows], np.asarray([row["embedding"] for row in rows], dtype=np.float32)


async def run(chunks: int, sample: int, fmt: str, idle_calls: int) -> None:
    texts = code_chunks(chunks)
    snippets = one_line_snippets(1000)
    # A new text each call, so the cache never answers.
    probes = (f"{snippets[i % len(snippets)]}  # {i}" for i in itertools.count())
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, project = Path(tmp, "data"), Path(tmp, "project")
        project.mkdir()
        source = project / "chunks.jsonl"
        source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
        params = server_params(data_dir, project)
        output = f"out.{fmt}"

        async with Client(params, mode="legacy", read_timeout_seconds=300) as client:
            for _ in range(5):  # loads the model (and exports it once on a new data directory)
                await embed_latency(client, next(probes))
            idle = [await embed_latency(client, next(probes)) for _ in range(idle_calls)]
            print(f"idle: p50/p95 {[round(p * 1000, 1) for p in percentiles(idle)]} ms", file=sys.stderr, flush=True)
            started_at = time.perf_counter()
            job = await call(client, "start_embedding_job", input=str(source), output=output)
            start_answer = time.perf_counter() - started_at
            job_id = job["job_id"]
            during: list[float] = []
            status = job
            while status["done"] < chunks // 2:
                during.append(await embed_latency(client, next(probes)))
                await anyio.sleep(0.2)  # an agent's pace, not a flood
                status = await call(client, "job_status", job_id=job_id)
                if len(during) % 200 == 0:
                    print(f"{status['done']:,} done; during p50/p95 so far {percentiles(during)}", file=sys.stderr)
            first_half_s = time.perf_counter() - started_at
            os.kill(server_pid(data_dir, job_id), signal.SIGKILL)
        killed_at = status["done"]

        cache = EmbeddingCache(data_dir / "cache.sqlite3")
        cached_at_kill = set(cache.get_many(SPACE, list(dict.fromkeys(texts)), 384))
        cache.close()
        expected_sends = len(set(texts) - cached_at_kill)

        async with Client(params, mode="legacy", read_timeout_seconds=300) as client:
            after_restart = await call(client, "job_status", job_id=job_id)
            resumed_at = time.perf_counter()
            await call(client, "resume_job", job_id=job_id)
            while (status := await call(client, "job_status", job_id=job_id))["status"] in ("queued", "running"):
                await anyio.sleep(0.5)
            resume_s = time.perf_counter() - resumed_at

        ids, vectors = read_output(project, fmt)
        picked = sorted(random.Random(0).sample(range(chunks), min(sample, chunks)))
        reference = uninterrupted_reference(tmp, [texts[i] for i in picked], data_dir)
        difference = float(np.abs(vectors[picked] - reference).max())

    idle_p50, idle_p95 = percentiles(idle)
    job_p50, job_p95 = percentiles(during)
    sent = status["done"] - status["cached"]
    print(f"machine: {os.cpu_count()} cores (shared: other work may have run alongside)")
    print(f"job: {chunks:,} chunks of 40 lines, output {fmt}; start_embedding_job answered in {start_answer:.3f} s")
    print(f"embed_text idle:        p50 {idle_p50 * 1000:6.1f} ms  p95 {idle_p95 * 1000:6.1f} ms  ({len(idle)} calls)")
    print(f"embed_text during job:  p50 {job_p50 * 1000:6.1f} ms  p95 {job_p95 * 1000:6.1f} ms  ({len(during)} calls)")
    ratio = job_p95 / idle_p95
    print(f"p95 during / idle: {ratio:.2f}x (target <= 3x: {'met' if ratio <= 3 else 'NOT met'})")
    print(f"first half: {killed_at:,} chunks in {first_half_s:.0f} s ({60 * killed_at / first_half_s:,.0f}/min)")
    print(f"after the restart the job showed: {after_restart['status']} at {after_restart['done']:,}/{chunks:,}")
    print(
        f"resumed run: sent {sent:,} chunks, {status['cached']:,} from the cache, in {resume_s:.0f} s; "
        f"not cached at the kill: {expected_sends:,} ({'met' if sent == expected_sends else 'NOT met'})"
    )
    in_order = ids == list(range(chunks))
    print(f"output: {status['status']}, {len(ids):,} rows, in input order: {in_order}")
    print(f"equal to an uncached run over {len(picked)} sampled chunks: max |difference| {difference:.2e}")


def uninterrupted_reference(tmp: str, texts: list[str], data_dir: Path) -> np.ndarray:
    """The vectors of `texts` from an `embed` run with no cache and the job's one model thread."""
    source = Path(tmp, "sample.jsonl")
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    target = Path(tmp, "sample.npy")
    env = {
        **os.environ,
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
        "SIGNAL_HUB_CACHE": "off",
        "SIGNAL_HUB_LOCAL_THREADS": str(max(1, usable_cores() - 1)),
    }
    argv = [sys.executable, "-m", "server", "embed", str(source), "-o", str(target), "--no-progress"]
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return np.load(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300, help="chunks compared with an uninterrupted run")
    parser.add_argument("--format", choices=["npy", "jsonl"], default="npy")
    parser.add_argument("--idle-calls", type=int, default=100)
    args = parser.parse_args()
    anyio.run(run, args.chunks, args.sample, args.format, args.idle_calls)


if __name__ == "__main__":
    main()
