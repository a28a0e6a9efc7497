"""find_duplicates' and rank_texts' maths after embedding: time and peak memory.

    .venv/bin/python -m benchmarks.similarity_speed
    .venv/bin/python -m benchmarks.similarity_speed --texts 2048 --dimensions 1536 --repeat 5

Vectors are random unit vectors with a share of near-copies (the same vector plus small noise),
so groups exist. Reported: median wall time of `find_duplicate_groups` and `rank` over the
repeats, and the peak memory numpy allocated during one grouping (tracemalloc), against the
n x n float64 matrix a naive version would build.

Target: 2,048 texts (about 2.1M pairs) grouped well under a second.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from providers.service.similarity import find_duplicate_groups, normalise, rank


def vectors(texts: int, dimensions: int, copies: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = normalise(rng.standard_normal((texts, dimensions)))
    copied = rng.random(texts) < copies
    sources = rng.integers(0, texts, texts)
    base[copied] = base[sources[copied]] + rng.standard_normal((int(copied.sum()), dimensions)) * 0.005
    return normalise(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--copies", type=float, default=0.1, help="share of texts that copy another")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    data = vectors(args.texts, args.dimensions, args.copies)
    group_times, rank_times = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        found = find_duplicate_groups(data, args.threshold)
        group_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        rank(data[0], data, top_k=10)
        rank_times.append(time.perf_counter() - start)

    tracemalloc.start()
    find_duplicate_groups(data, args.threshold)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    pairs = args.texts * (args.texts - 1) // 2
    print(f"{args.texts} texts x {args.dimensions} dimensions, {pairs:,} pairs, threshold {args.threshold}")
    print(f"groups found: {len(found.groups)} (largest {len(found.groups[0].indexes) if found.groups else 0})")
    print(f"find_duplicate_groups: median {statistics.median(group_times) * 1000:.1f} ms over {args.repeat} runs")
    print(f"rank (top 10):         median {statistics.median(rank_times) * 1000:.2f} ms")
    print(
        f"peak memory allocated: {peak / 2**20:.1f} MiB "
        f"(an n x n float64 matrix would be {args.texts**2 * 8 / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
