"""The Ray engine against the in-process engine, on the same code chunks, on this machine.

    .venv/bin/python -m benchmarks.ray_engine [--chunks 10000] [--actors 2]

(a) in-process: one `LocalProvider` with 2 threads, calls of 256 chunks (the batch CLI's window);
(b) Ray: `run_ray_job` on an embedded local Ray (2 CPUs), 2 single-thread actors, shards of 1,000.
Both start from a loaded ONNX export in the same data directory, the vector cache off; (a) times
its model load and calls, (b) the whole job with Ray already up (reading, planning, actor start,
embedding, writing the shards), Ray's start-up reported apart. Then the driver's own work per
chunk is measured (cache look-up and fill, shard writing), which bounds how fast any cluster can go.
Targets: b/a throughput >= 0.85; cosine >= 0.9999 and the same id order; peak RSS per actor reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from benchmarks.corpus import code_chunks
from providers import Settings
from providers.cache import EmbeddingCache
from providers.local import LocalProvider
from providers.ray_engine import RayJobOptions, read_shards, run_ray_job
from providers.ray_engine.output import OutputDir

TARGET_RATIO = 0.85
TARGET_COSINE = 0.9999
_WINDOW = 256
_CLUSTER_CORES = 16 * 8


def in_process(texts: list[str], data_dir: Path, threads: int) -> tuple[np.ndarray[Any, Any], float]:
    async def run() -> tuple[np.ndarray[Any, Any], float]:
        provider = LocalProvider.from_settings(Settings(data_dir=data_dir, local_threads=threads, cache=False))
        started = time.perf_counter()
        parts = [(await provider.embed(texts[i : i + _WINDOW])).vectors for i in range(0, len(texts), _WINDOW)]
        return np.concatenate(parts), time.perf_counter() - started

    return anyio.run(run)


def driver_costs(texts: list[str], vectors: np.ndarray[Any, Any], directory: Path) -> dict[str, float]:
    """Seconds per chunk of the driver's serial work: cache look-up (miss), cache fill, shard writing."""
    cache = EmbeddingCache(directory / "cache.sqlite3")
    space = "local:all-MiniLM-L6-v2:384:l2"
    try:
        started = time.perf_counter()
        cache.get_many(space, texts, vectors.shape[1])
        lookup = time.perf_counter() - started
        started = time.perf_counter()
        cache.put_many(space, texts, vectors, [0] * len(texts))
        fill = time.perf_counter() - started
    finally:
        cache.close()
    output = OutputDir(directory / "shards", "parquet")
    output.claim({"benchmark": True})
    started = time.perf_counter()
    for shard, start in enumerate(range(0, len(texts), 1000)):
        part = vectors[start : start + 1000]
        output.write_shard(shard, list(range(start, start + len(part))), part, [0] * len(part))
    write = time.perf_counter() - started
    return {name: seconds / len(texts) for name, seconds in (("lookup", lookup), ("fill", fill), ("write", write))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args(argv)
    import ray

    texts = code_chunks(args.chunks)
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as scratch:
        root = Path(scratch)
        data_dir = root / "data"
        source = root / "chunks.jsonl"
        source.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)))
        in_process(texts[:8], data_dir, 1)  # makes the ONNX export, untimed
        load_before = os.getloadavg()[0]

        reference, reference_s = in_process(texts, data_dir, threads=args.actors)
        print(
            f"(a) in-process, {args.actors} threads: {len(texts) / reference_s * 60:,.0f} chunks/min", file=sys.stderr
        )

        started = time.perf_counter()
        ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        ray_start_s = time.perf_counter() - started
        try:
            options = RayJobOptions(inputs=(str(source),), output=root / "out", actors=args.actors, threads_per_actor=1)
            report = run_ray_job(options, Settings(data_dir=data_dir, cache=False))
        finally:
            ray.shutdown()
        ray_s = report.wall_time_s
        ids, vectors, _ = read_shards(root / "out")
        cosines = np.sum(vectors * reference, axis=1)
        costs = driver_costs(texts, reference, root / "driver")

    ray_rate = len(texts) / ray_s * 60
    per_core = ray_rate / args.actors
    driver_per_chunk = sum(costs.values())
    result = {
        "chunks": len(texts),
        "in_process_chunks_per_min": round(len(texts) / reference_s * 60),
        "ray_chunks_per_min": round(ray_rate),
        "throughput_ratio": round(reference_s / ray_s, 3),
        "ray_start_s": round(ray_start_s, 1),
        "cosine_min": float(cosines.min()),
        "same_order": ids == list(range(len(texts))),
        "actors": report.actors,
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "driver_us_per_chunk": {name: round(seconds * 1e6, 1) for name, seconds in costs.items()},
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "projection": {
            "chunks_per_min_per_core": round(per_core),
            "cluster_16x8_chunks_per_min": round(per_core * _CLUSTER_CORES),
            "cluster_16x8_hours_for_10M": round(10_000_000 / (per_core * _CLUSTER_CORES) / 60, 2),
            "driver_limit_chunks_per_min": round(60 / driver_per_chunk),
        },
    }
    print(json.dumps(result, indent=2))
    ratio_ok = result["throughput_ratio"] >= TARGET_RATIO
    vectors_ok = result["cosine_min"] >= TARGET_COSINE and result["same_order"]
    print(
        f"throughput ratio {result['throughput_ratio']} (target >= {TARGET_RATIO}): {'ok' if ratio_ok else 'MISSED'}; "
        f"vectors {'equal' if vectors_ok else 'DIFFER'}",
        file=sys.stderr,
    )
    return 0 if ratio_ok and vectors_ok else 1


if __name__ == "__main__":
    sys.exit(main())
