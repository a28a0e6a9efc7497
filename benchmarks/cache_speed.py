"""The embedding cache through the `embed` command: cold vs warm runs, kill and resume, memory.

    .venv/bin/python -m benchmarks.cache_speed                   # everything, as reported
    .venv/bin/python -m benchmarks.cache_speed --skip-local      # without the local model (minutes faster)
    .venv/bin/python -m benchmarks.cache_speed --chunks 2000 --rss-chunks 20000   # a quick look

Every run is a real `python -m server embed` process on a JSONL file of 40-line stdlib chunks
(`benchmarks.corpus`), with its own data directory, so cold means an empty cache:

1. local model, cold then warm (JSONL output both times; then warm to .npy);
2. the OpenAI provider against the loopback server (tests/loopback_openai.py), cold then warm,
   requests counted by the server;
3. kill -9 at half-way: the OpenAI job again, with per-request latency so it takes a while; once
   the server has embedded half of the chunks the process is killed, then run again: the second
   run must send exactly the chunks the cache does not hold;
4. peak RSS (`os.wait4` of each process) for `--chunks` and for `--rss-chunks` chunks, through the
   loopback OpenAI provider (the local model would take hours for 100,000). Beyond the 22k
   chunks the standard library holds, the corpus repeats with a `# variant k` line appended, so
   every text is distinct and every one is embedded.

Provider work of local runs is read from the cost ledger (`requests`, `cached`) each run writes.

Targets: warm >= 50x faster than cold with 0 provider requests; the rerun after the kill sends
only the remaining chunks; peak RSS at 100,000 chunks <= 1.5x that at 10,000.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np

from benchmarks.corpus import code_chunks
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger
from tests.loopback_openai import LoopbackOpenAI, embedding_for

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-benchmark"
OPENAI_SPACE = "openai:text-embedding-3-small:1536:l2"
STDLIB_CHUNKS = 20_000  # fewer than the stdlib holds on any recent Python


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    returncode: int
    stderr: str

    @property
    def summary(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def distinct_chunks(n: int) -> Iterator[str]:
    """`n` distinct code chunks: the stdlib's, then the same again with a `# variant k` line."""
    base = code_chunks(min(n, STDLIB_CHUNKS))
    for i in range(n):
        cycle, index = divmod(i, len(base))
        yield base[index] if cycle == 0 else f"{base[index]}\n# variant {cycle}"


def write_corpus(path: Path, n: int) -> list[str]:
    texts = list(distinct_chunks(n))
    with path.open("w") as out:
        out.writelines(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts))
    return texts


def start(argv: list[str], env: dict[str, str], stderr: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "server", "embed", *argv, "--no-progress"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def finish(process: subprocess.Popen[str], started: float, stderr: IO[str]) -> Run:
    """Wait for `process`, following its peak RSS (VmHWM) in /proc.

    Not `ru_maxrss`: on Linux a child's starts at its parent's RSS at the fork, so it would
    report this benchmark's own memory, not the command's. Without /proc it is the fallback.
    """
    peak_kib = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_kib = max(peak_kib, _vm_hwm_kib(process.pid))
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    stderr.seek(0)
    return Run(seconds, (peak_kib or usage.ru_maxrss) / 1024, process.returncode, stderr.read())


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def cli(argv: list[str], env: dict[str, str]) -> Run:
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        run = finish(start(argv, env, stderr), started, stderr)
    if run.returncode != 0:
        raise SystemExit(f"embed {' '.join(argv)} failed ({run.returncode}):\n{run.stderr}")
    return run


def ledger_since(data_dir: Path, since: datetime) -> tuple[int, int, int]:
    """(provider requests, texts embedded, texts cached) that the runs since `since` recorded."""
    ledger = CostLedger(data_dir / "ledger.sqlite3")
    try:
        total = ledger.report(since=since).total
    finally:
        ledger.close()
    return total.requests, total.embeddings - total.cached, total.cached


def openai_env(server: LoopbackOpenAI, data_dir: Path) -> dict[str, str]:
    return {
        "SIGNAL_HUB_PROVIDER": "openai",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": KEY,
        "SIGNAL_HUB_DATA_DIR": str(data_dir),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def local_cold_warm(work: Path, corpus: Path, n: int) -> bool:
    data = work / "local-data"
    env = {"SIGNAL_HUB_PROVIDER": "local", "SIGNAL_HUB_DATA_DIR": str(data)}
    print(f"\n1. local model ({n:,} chunks; JSONL output)")
    # The first use exports the packaged model to ONNX under the data directory (a one-off, ~15 s):
    # do it before timing, with a text not in the corpus, so "cold" means only "nothing cached".
    (work / "warm-up.jsonl").write_text(json.dumps({"id": 0, "text": "# warming up the model"}) + "\n")
    cli([str(work / "warm-up.jsonl"), "-o", str(work / "warm-up.npy")], env)
    runs, work_done = {}, {}
    for name, output in (("cold", "cold.jsonl"), ("warm", "warm.jsonl"), ("warm .npy", "warm.npy")):
        since = datetime.now(UTC)
        runs[name] = cli([str(corpus), "-o", str(work / output)], env)
        work_done[name] = ledger_since(data, since)
        requests, embedded, cached = work_done[name]
        print(
            f"   {name:10} {runs[name].seconds:9.2f} s   peak RSS {runs[name].peak_rss_mib:6.0f} MiB   "
            f"model calls {requests:4}, embedded {embedded:6,}, cached {cached:6,}   [{runs[name].summary}]"
        )
    same = (work / "cold.jsonl").read_bytes() == (work / "warm.jsonl").read_bytes()
    speedup = runs["cold"].seconds / runs["warm"].seconds
    ok = speedup >= 50 and work_done["warm"][0] == 0 and same
    calls = work_done["warm"][0]
    print(f"   warm/cold speed-up {speedup:,.0f}x (target >= 50x), model calls when warm {calls} (target 0)")
    print(f"   warm output identical to cold: {same}   -> {verdict(ok)}")
    return ok


def openai_cold_warm(work: Path, corpus: Path, texts: list[str], latency: float) -> bool:
    print(f"\n2. OpenAI provider against the loopback server ({len(texts):,} chunks, {latency:g} s a request)")
    runs: dict[str, tuple[Run, int]] = {}
    with LoopbackOpenAI(api_key=KEY, latency=latency) as server:
        env = openai_env(server, work / "openai-data")
        for name, output, extra in (
            ("cold", "openai-cold.jsonl", []),
            ("warm", "openai-warm.jsonl", []),
            ("warm base64", "openai-warm-b64.jsonl", ["--encoding", "base64"]),
            ("warm .npy", "openai-warm.npy", []),
        ):
            before = server.request_count
            run = cli([str(corpus), "-o", str(work / output), *extra], env)
            runs[name] = run, server.request_count - before
            print(
                f"   {name:11} {run.seconds:8.2f} s   peak RSS {run.peak_rss_mib:6.0f} MiB   "
                f"server requests {runs[name][1]:4}   [{run.summary}]"
            )
        cold_inputs = len(server.embedded_inputs())
    same = (work / "openai-cold.jsonl").read_bytes() == (work / "openai-warm.jsonl").read_bytes()
    warm_requests = sum(requests for name, (_, requests) in runs.items() if name != "cold")
    ok = warm_requests == 0 and same and cold_inputs == len(set(texts))
    print(
        f"   cold sent {cold_inputs:,} inputs for {len(set(texts)):,} distinct texts; requests of the warm runs "
        f"{warm_requests} (target 0); speed-up {runs['cold'][0].seconds / runs['warm'][0].seconds:.1f}x; "
        f"outputs identical: {same}   -> {verdict(ok)}"
    )
    return ok


def kill_and_resume(work: Path, corpus: Path, texts: list[str], latency: float) -> bool:
    print(f"\n3. kill -9 at half-way, then again (OpenAI via loopback, {latency:g} s a request)")
    data, output = work / "resume-data", work / "resume.jsonl"
    with LoopbackOpenAI(api_key=KEY, latency=latency) as server:
        env = openai_env(server, data)
        with tempfile.TemporaryFile("w+") as stderr:
            job = start([str(corpus), "-o", str(output)], env, stderr)
            deadline = time.monotonic() + 600
            while server.inputs_embedded < len(texts) // 2 and job.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            job.send_signal(signal.SIGKILL)
            killed = finish(job, time.perf_counter(), stderr)
        sent_before, left_output = server.inputs_embedded, output.exists()
        cache = EmbeddingCache(data / "cache.sqlite3")
        try:
            cached = set(cache.get_many(OPENAI_SPACE, texts, 1536))
        finally:
            cache.close()
        server.latency = 0.0
        server.reset_counters()
        rerun = cli([str(corpus), "-o", str(output)], env)
        resent = server.embedded_inputs()
    remaining = set(texts) - cached
    print(
        f"   first run: killed ({killed.returncode}) once the server had embedded {sent_before:,} inputs; "
        f"{len(cached):,} in the cache (finished windows); an output file left: {left_output}"
    )
    print(f"   embedded in windows still in flight at the kill, so never cached: {sent_before - len(cached):,}")
    print(f"   rerun: the server embedded {len(resent):,} inputs; {len(remaining):,} chunks remained")
    print(f"   [{rerun.summary}]")
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    wrong = sum(
        1
        for row, text in zip(rows, texts, strict=True)
        if not np.allclose(np.asarray(row["embedding"], np.float32), embedding_for(text), rtol=0, atol=1e-7)
    )
    only_remaining = sorted(resent) == sorted(remaining)
    ok = killed.returncode == -signal.SIGKILL and 0 < len(cached) < len(texts) and only_remaining and wrong == 0
    print(f"   sent exactly the remaining chunks: {only_remaining}; output rows {len(rows):,}, wrong vectors {wrong}")
    print(f"   -> {verdict(ok and len(rows) == len(texts))}")
    return ok and len(rows) == len(texts)


def peak_rss(work: Path, small: int, large: int) -> bool:
    print(f"\n4. peak RSS, OpenAI via loopback (no latency), cold runs to .npy: {small:,} vs {large:,} chunks")
    results = {}
    for n in (small, large):
        corpus = work / f"rss-{n}.jsonl"
        write_corpus(corpus, n)
        with LoopbackOpenAI(api_key=KEY) as server:
            run = cli([str(corpus), "-o", str(work / f"rss-{n}.npy")], openai_env(server, work / f"rss-data-{n}"))
            requests = server.request_count
        results[n] = run
        print(
            f"   {n:>7,} chunks {run.seconds:8.1f} s   peak RSS {run.peak_rss_mib:6.1f} MiB   "
            f"{requests} requests   [{run.summary}]"
        )
        corpus.unlink()
        for leftover in (work / f"rss-{n}.npy", work / f"rss-{n}.ids.jsonl"):
            leftover.unlink()
    ratio = results[large].peak_rss_mib / results[small].peak_rss_mib
    ok = ratio <= 1.5
    print(f"   ratio {ratio:.2f} (target <= 1.5)   -> {verdict(ok)}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--rss-chunks", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each loopback answer takes (part 2)")
    parser.add_argument("--kill-latency", type=float, default=0.2, help="seconds each answer takes (part 3)")
    parser.add_argument("--skip-local", action="store_true", help="leave out the local model (part 1)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cache-speed-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus.jsonl"
        texts = write_corpus(corpus, args.chunks)
        print(f"corpus: {len(texts):,} chunks of 40 lines ({corpus.stat().st_size / 2**20:.1f} MiB of JSONL)")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        results = []
        if not args.skip_local:
            results.append(local_cold_warm(work, corpus, len(texts)))
        results.append(openai_cold_warm(work, corpus, texts, args.latency))
        results.append(kill_and_resume(work, corpus, texts, args.kill_latency))
        results.append(peak_rss(work, args.chunks, args.rss_chunks))
    print(f"\n{sum(results)}/{len(results)} targets met")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
