"""The Ray engine against the in-process engine, on the same code chunks, on this machine.

    .venv/bin/python -m benchmarks.ray_engine [--chunks 10000] [--actors 2] [--rounds 2]

(a) in-process: one `LocalProvider` with 2 threads, calls of 256 chunks (the batch CLI's window);
(b) Ray: `run_ray_job` on an embedded local Ray (2 CPUs), 2 single-thread actors, shards of 1,000.
The chunks are split over rounds run a-b, b-a, ... so a neighbour's load falls on both alike. Both
start from the ONNX export in one data directory, the vector cache off; (a) times its model load
and calls, (b) each whole job with Ray already up (reading, planning, actor start, embedding,
writing shards), Ray's start-up reported apart. Then the driver's own work per chunk is measured
(planning, cache look-up and fill, shard writing): it bounds how fast any cluster can go.
Targets: b/a throughput >= 0.85; cosine >= 0.9999 and the same id order; peak RSS per actor reported."""

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
from providers.local import LocalProvider
from providers.ray_engine import RayJobOptions, read_shards, run_ray_job
from providers.ray_engine.output import OutputDir
from providers.storage.cache import EmbeddingCache

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
    """Seconds per chunk of the driver's serial work beyond planning: cache look-up, cache fill, shard writing."""
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


def ray_job(texts: list[str], root: Path, data_dir: Path, actors: int, name: str) -> tuple[Any, list[object], Any]:
    source = root / f"{name}.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)))
    options = RayJobOptions(inputs=(str(source),), output=root / name, actors=actors, threads_per_actor=1)
    report = run_ray_job(options, Settings(data_dir=data_dir, cache=False))
    ids, vectors, _ = read_shards(root / name)
    return report, ids, vectors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=2, help="split the chunks over rounds run a-b, b-a, ... so both see the same load"
    )
    args = parser.parse_args(argv)
    import ray

    texts = code_chunks(args.chunks)
    size = -(-len(texts) // args.rounds)
    parts = [texts[start : start + size] for start in range(0, len(texts), size)]
    reference_s = ray_s = plan_s = 0.0
    references: list[Any] = [None] * len(parts)
    outputs: list[Any] = [None] * len(parts)
    actors: dict[str, Any] = {}
    same_order = True
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as scratch:
        root = Path(scratch)
        data_dir = root / "data"
        in_process(texts[:8], data_dir, 1)  # makes the ONNX export, untimed
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        ray_start_s = time.perf_counter() - started
        try:
            for index, part in enumerate(parts):
                order = ("in-process", "ray") if index % 2 == 0 else ("ray", "in-process")
                for engine in order:
                    if engine == "in-process":
                        references[index], seconds = in_process(part, data_dir, threads=args.actors)
                        reference_s += seconds
                    else:
                        report, ids, outputs[index] = ray_job(part, root, data_dir, args.actors, f"round-{index}")
                        ray_s += report.wall_time_s
                        plan_s += report.plan_s
                        same_order = same_order and ids == list(range(len(part)))
                        for worker, seen in report.actors.items():
                            actors[worker] = {**seen, "rows": actors.get(worker, {}).get("rows", 0) + seen["rows"]}
                    print(f"round {index + 1}/{len(parts)}: {engine} done", file=sys.stderr)
        finally:
            ray.shutdown()
        reference = np.concatenate(references)
        vectors = np.concatenate(outputs)
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
        "same_order": same_order,
        "rounds": len(parts),
        "actors": actors,
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "driver_us_per_chunk": {name: round(seconds * 1e6, 1) for name, seconds in costs.items()},
        # Mostly fixed per job (Ray Data's read tasks starting), so not counted per chunk.
        "driver_plan_s": round(plan_s, 1),
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
