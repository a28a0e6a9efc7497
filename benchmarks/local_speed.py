"""Local embedding speed and memory: raw sentence-transformers vs our provider vs the MCP server.

    .venv/bin/python -m benchmarks.local_speed [--texts 2000] [--rounds 1]

Variants, each in its own worker process so their peak RSS does not mix (ru_maxrss of the
worker; for the MCP variants, of the server process it started):
  (a)  raw   `SentenceTransformer.encode`, fp32 torch, batch size 8: the reference;
  (b)  ours  `EmbeddingService.batch_generate`, default configuration;
  (c)  mcp   the server over stdio, `embed_batch`, vectors as JSON floats (the tool's default);
  (c') mcp   the same with `encoding="base64"`.
Every variant gets the same calls of 100 texts. The calls are interleaved, one per variant in
a shuffled order each time, so a neighbour's load on the shared CPUs falls on all variants alike
and no variant always follows the same one; before each call the machine idles for 50 ms, so the
thread pools of the call before have stopped spinning. Each rate is texts / time inside the calls.
Corpora: distinct 40-line chunks of the stdlib source, distinct one-line snippets. Each round
takes texts no earlier round used, the vector cache is off, warm-up texts are never measured.
Targets: b/a >= 1.35 and b >= 1,900/min on code chunks; c/b >= 0.90; peak RSS of b and c < 1.5 GB.
The ONNX export is made (or found in the cache) before timing starts, and its time is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.corpus import code_chunks, one_line_snippets

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "raw": "(a) raw ST.encode fp32",
    "ours": "(b) provider default",
    "mcp": "(c) MCP stdio, float",
    "mcp-base64": "(c') MCP stdio, base64",
}
CORPORA = ("code", "snippets")
TEXTS_PER_CALL = 100
_WARM_UP_TEXTS = 40
_RAW_BATCH_SIZE = 8  # the reference's best batch size on 2 cores (8 beat 32)
# Idle time before each call (not timed): thread pools of the variant that ran before spin-wait
# for a while after their work, and would otherwise slow whichever variant comes next.
_SETTLE_S = 0.05

TARGET_OURS_OVER_RAW = 1.35
TARGET_MCP_OVER_OURS = 0.90
TARGET_CODE_PER_MINUTE = 1900
TARGET_PEAK_RSS_MB = 1536

Embed = Callable[[list[str]], Awaitable[npt.NDArray[np.float32]]]


def round_texts(corpus: str, count: int, round_index: int) -> tuple[list[str], list[str]]:
    """(warm-up texts, measured texts) of a round: distinct, and disjoint from every other round's."""
    per_round = count + _WARM_UP_TEXTS
    needed = per_round * (round_index + 1)
    source = code_chunks(needed + needed // 10) if corpus == "code" else one_line_snippets(needed)
    distinct = list(dict.fromkeys(source))[round_index * per_round : needed]
    if len(distinct) < per_round:
        raise SystemExit(f"not enough distinct {corpus} texts for {count} per round")
    return distinct[:_WARM_UP_TEXTS], distinct[_WARM_UP_TEXTS:]


# --- a worker: one variant in its own process, driven over stdin/stdout -----------------------


async def serve_variant(variant: str, count: int, round_index: int, out: Path, data_dir: Path) -> None:
    """Load, warm up, say "ready"; then embed each requested slice and answer with its seconds."""
    async with AsyncExitStack() as stack:
        embed, config = await _open_variant(variant, data_dir, stack)
        texts = {corpus: round_texts(corpus, count, round_index) for corpus in CORPORA}
        for warm, _ in texts.values():
            await embed(warm)
        vectors: dict[str, list[npt.NDArray[np.float32]]] = {corpus: [] for corpus in CORPORA}
        _reply({"ready": True, "config": config})
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "done":
                break
            batch = texts[command["corpus"]][1][command["start"] : command["end"]]
            started = time.perf_counter()
            vectors[command["corpus"]].append(await embed(batch))
            _reply({"seconds": time.perf_counter() - started})
        for corpus, parts in vectors.items():
            np.save(out / f"{variant}-{corpus}.npy", np.concatenate(parts))
    # ru_maxrss is in KiB on Linux. The MCP server has exited by now: it is this worker's only child.
    usage = resource.RUSAGE_CHILDREN if variant.startswith("mcp") else resource.RUSAGE_SELF
    _reply({"peak_rss_mb": resource.getrusage(usage).ru_maxrss / 1024})


async def _open_variant(variant: str, data_dir: Path, stack: AsyncExitStack) -> tuple[Embed, str]:
    if variant == "raw":
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        from providers.local import packaged_model_path

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        model = SentenceTransformer(str(packaged_model_path()), device="cpu", local_files_only=True)

        async def embed_raw(texts: list[str]) -> npt.NDArray[np.float32]:
            return np.asarray(model.encode(texts, batch_size=_RAW_BATCH_SIZE, normalize_embeddings=True))

        import torch

        return embed_raw, f"torch {torch.get_num_threads()} threads, batch {_RAW_BATCH_SIZE}"

    if variant == "ours":
        from providers import EmbeddingService, Settings
        from providers.local import LocalProvider

        service = await stack.enter_async_context(EmbeddingService(settings=Settings(data_dir=data_dir, cache=False)))

        async def embed_ours(texts: list[str]) -> npt.NDArray[np.float32]:
            return np.asarray(await service.batch_generate(texts), dtype=np.float32)

        await service.batch_generate(["load the model"])
        provider = service.provider
        assert isinstance(provider, LocalProvider) and provider.runtime is not None
        runtime = provider.runtime
        return embed_ours, (
            f"{runtime.backend} on {runtime.device}, {runtime.threads} threads, batch {runtime.batch_size}, "
            f"long texts {provider.long_texts}"
        )

    import base64

    from mcp import Client, StdioServerParameters

    encoding = "base64" if variant == "mcp-base64" else "float"
    env = {"HF_HUB_OFFLINE": "1", "SIGNAL_HUB_DATA_DIR": str(data_dir), "SIGNAL_HUB_CACHE": "off", "OPENAI_API_KEY": ""}
    params = StdioServerParameters(command=sys.executable, args=["-m", "server"], env=env, cwd=str(ROOT))
    client = await stack.enter_async_context(Client(params, mode="legacy", read_timeout_seconds=600))

    async def embed_mcp(texts: list[str]) -> npt.NDArray[np.float32]:
        answer = await client.call_tool("embed_batch", {"texts": texts, "encoding": encoding})
        if answer.is_error or answer.structured_content is None:
            raise SystemExit(f"embed_batch failed: {answer.content}")
        items = answer.structured_content["embeddings"]
        if encoding == "base64":
            return np.stack([np.frombuffer(base64.b64decode(item), dtype="<f4") for item in items])
        return np.asarray(items, dtype=np.float32)

    return embed_mcp, f"embed_batch, {TEXTS_PER_CALL} texts per call, encoding {encoding}"


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- the driver -------------------------------------------------------------------------------


class Worker:
    def __init__(self, variant: str, count: int, round_index: int, out: Path, data_dir: Path) -> None:
        args = ["--variant", variant, "--texts", str(count), "--round", str(round_index), "--out", str(out)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.local_speed", *args, "--data-dir", str(data_dir)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.config = self._read()["config"]

    def embed(self, corpus: str, start: int, end: int) -> float:
        self._send({"op": "embed", "corpus": corpus, "start": start, "end": end})
        return float(self._read()["seconds"])

    def finish(self) -> float:
        """Peak RSS in MB, once the worker has saved its vectors and exited."""
        self._send({"op": "done"})
        peak = float(self._read()["peak_rss_mb"])
        self.process.wait(timeout=120)
        return peak

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker {self.process.args!r} exited with {self.process.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]


def run_round(count: int, round_index: int, out: Path, data_dir: Path) -> dict[str, dict[str, Any]]:
    # Started one after another, so no load overlaps another's timing; all stay alive, idle between calls.
    workers = {variant: Worker(variant, count, round_index, out, data_dir) for variant in VARIANTS}
    seconds = {variant: dict.fromkeys(CORPORA, 0.0) for variant in VARIANTS}
    shuffle = random.Random(round_index)
    for corpus in CORPORA:
        for start in range(0, count, TEXTS_PER_CALL):
            for variant in shuffle.sample(list(VARIANTS), len(VARIANTS)):
                time.sleep(_SETTLE_S)
                seconds[variant][corpus] += workers[variant].embed(corpus, start, min(start + TEXTS_PER_CALL, count))
    return {
        variant: {
            "rates": {corpus: count / seconds[variant][corpus] * 60 for corpus in CORPORA},
            "peak_rss_mb": worker.finish(),
            "config": worker.config,
        }
        for variant, worker in workers.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local embedding speed and memory benchmark.")
    parser.add_argument("--texts", type=int, default=2000, help="texts per corpus and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each on texts not seen before")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from providers import Settings

    data_dir = args.data_dir or Settings.from_env().resolved_data_dir
    if args.variant:
        import anyio

        anyio.run(serve_variant, args.variant, args.texts, args.round, args.out, data_dir)
        return 0

    import tempfile

    print(f"load average before: {_load()}; {os.cpu_count()} CPUs; data dir {data_dir}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _PREPARE, str(data_dir)], cwd=ROOT, check=True)
    print(f"model ready (ONNX export made, or verified in the cache) in {time.perf_counter() - started:.1f} s")
    rounds: list[dict[str, dict[str, Any]]] = []
    agreement: dict[str, list[npt.NDArray[np.float32]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            out = Path(scratch) / f"round{round_index}"
            out.mkdir()
            results = run_round(args.texts, round_index, out, data_dir)
            rounds.append(results)
            for corpus in CORPORA:
                raw, ours, mcp, mcp_base64 = (np.load(out / f"{v}-{corpus}.npy") for v in VARIANTS)
                agreement.setdefault(f"b~a {corpus}", []).append(np.sum(raw * ours, axis=1))
                agreement.setdefault(f"c~b {corpus}", []).append(np.sum(ours * mcp, axis=1))
                agreement.setdefault(f"c'~b {corpus}", []).append(np.sum(ours * mcp_base64, axis=1))
            _print_round(round_index, results)
    print(f"load average after: {_load()}")
    return 0 if _print_summary(rounds, agreement, args.texts) else 1


_PREPARE = """
import sys, anyio
from pathlib import Path
from providers.local import LocalProvider
anyio.run(lambda: LocalProvider(data_dir=Path(sys.argv[1])).embed(["warm up"]))
"""


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _print_round(round_index: int, results: dict[str, dict[str, Any]]) -> None:
    print(f"\nround {round_index + 1}")
    print(f"  {'variant':<25} {'code/min':>9} {'snippets/min':>13} {'peak RSS':>9}  configuration")
    for variant, label in VARIANTS.items():
        r = results[variant]
        print(f"  {label:<25} {r['rates']['code']:9,.0f} {r['rates']['snippets']:13,.0f} "
              f"{r['peak_rss_mb']:7,.0f}MB  {r['config']}")  # fmt: skip


def _print_summary(
    rounds: list[dict[str, dict[str, Any]]], agreement: dict[str, list[npt.NDArray[np.float32]]], texts: int
) -> bool:
    def rate(variant: str, corpus: str) -> float:
        return float(statistics.median(r[variant]["rates"][corpus] for r in rounds))

    def ratio(top: str, bottom: str, corpus: str) -> float:
        return float(statistics.median(r[top]["rates"][corpus] / r[bottom]["rates"][corpus] for r in rounds))

    peak = {v: max(r[v]["peak_rss_mb"] for r in rounds) for v in VARIANTS}
    print(f"\nsummary over {len(rounds)} round(s) of {texts} texts per corpus (medians; ratios within a round)")
    for corpus in CORPORA:
        print(f"  {corpus:<9} a {rate('raw', corpus):7,.0f}/min  b {rate('ours', corpus):7,.0f}/min  "
              f"c {rate('mcp', corpus):7,.0f}/min  c' {rate('mcp-base64', corpus):7,.0f}/min  "
              f"b/a {ratio('ours', 'raw', corpus):.2f}  c/b {ratio('mcp', 'ours', corpus):.3f}  "
              f"c'/b {ratio('mcp-base64', 'ours', corpus):.3f}")  # fmt: skip
    for name, parts in agreement.items():
        cos = np.concatenate(parts)
        print(f"  cosine {name:<14} mean {cos.mean():.4f}  min {cos.min():.4f}")
    checks = [
        ("b/a >= 1.35 on code chunks", ratio("ours", "raw", "code") >= TARGET_OURS_OVER_RAW),
        ("b >= 1,900 code chunks/min", rate("ours", "code") >= TARGET_CODE_PER_MINUTE),
        ("c/b >= 0.90 on code chunks", ratio("mcp", "ours", "code") >= TARGET_MCP_OVER_OURS),
        ("c/b >= 0.90 on snippets", ratio("mcp", "ours", "snippets") >= TARGET_MCP_OVER_OURS),
        ("c'/b >= 0.90 on snippets (base64)", ratio("mcp-base64", "ours", "snippets") >= TARGET_MCP_OVER_OURS),
        ("peak RSS of b < 1.5 GB", peak["ours"] < TARGET_PEAK_RSS_MB),
        ("peak RSS of c (the server) < 1.5 GB", max(peak["mcp"], peak["mcp-base64"]) < TARGET_PEAK_RSS_MB),
        ("b agrees with a: mean >= 0.99, min >= 0.97", _agrees(agreement, "b~a")),
    ]
    print()
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    passed = all(ok for _, ok in checks)
    print(f"\nresult: {'PASS' if passed else 'FAIL'}")
    return passed


def _agrees(agreement: dict[str, list[npt.NDArray[np.float32]]], prefix: str) -> bool:
    cos = np.concatenate([np.concatenate(parts) for name, parts in agreement.items() if name.startswith(prefix)])
    return bool(cos.mean() >= 0.99 and cos.min() >= 0.97)


if __name__ == "__main__":
    sys.exit(main())
