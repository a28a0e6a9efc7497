"""Whole `embed` commands: the in-process engine against `--engine ray`, with and without a running Ray.

    .venv/bin/python -m benchmarks.ray_commands [--sizes 2000 10000] [--rounds 1]

For each size, three commands on the same chunks, each from an empty vector cache (the ONNX export
shared), timed from launch to exit as a user waits for them:
(a) `embed chunks.jsonl -o out.jsonl` (in-process);
(b) `embed chunks.jsonl -o DIR --engine ray` on a local Ray the command starts itself;
(c) the same with a Ray left running by `ray start --head` (the command connects to it).
Rounds run a-b-c, then c-b-a, so a neighbour's load falls on each alike. Printed: seconds and the
throughput ratios b/a and c/a. `server/commands/ray_shards.RAY_PAYS_OFF_ROWS` says where b pays off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import code_chunks

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def command(kind: str, chunks: Path, work: Path, onnx: Path) -> float:
    data_dir = work / f"data-{kind}-{time.monotonic_ns()}"
    data_dir.mkdir()
    (data_dir / "onnx").symlink_to(onnx, target_is_directory=True)
    output = ["-o", str(work / f"out-{kind}.jsonl")] if kind == "in-process" else ["-o", str(work / f"shards-{kind}")]
    engine = [] if kind == "in-process" else ["--engine", "ray"]
    env = {**os.environ, "SIGNAL_HUB_DATA_DIR": str(data_dir)}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "server", "embed", str(chunks), *output, *engine, "--no-progress"],
        cwd=ROOT,
        env=env,
        check=True,
        stderr=subprocess.DEVNULL,
        timeout=3600,
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(data_dir)
    for leftover in work.glob(f"*-{kind}*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--one-pass", action="store_true", help="run each command once (a-b-c), not a-b-c then c-b-a")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ray-commands-") as tmp:
        work = Path(tmp)
        onnx = work / "onnx"
        prepare_dir = work / "prepare"
        subprocess.run(
            [sys.executable, "-m", "server", "prepare"],
            cwd=ROOT,
            env={**os.environ, "SIGNAL_HUB_DATA_DIR": str(prepare_dir)},
            check=True,
            stderr=subprocess.DEVNULL,
        )
        (prepare_dir / "onnx").rename(onnx)
        rows = []
        warm = work / "warm.jsonl"
        warm.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(code_chunks(50))))
        for size in args.sizes:
            chunks = work / f"chunks-{size}.jsonl"
            texts = code_chunks(size)
            chunks.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
            times: dict[str, list[float]] = {"in-process": [], "ray": [], "running-ray": []}
            for round_ in range(1 if args.one_pass else args.rounds * 2):
                order = ["in-process", "ray", "running-ray"]
                for kind in order if round_ % 2 == 0 else reversed(order):
                    if kind == "running-ray":
                        subprocess.run(
                            [str(RAY), "start", "--head", "--num-cpus", "2", "--include-dashboard=false"],
                            check=True,
                            capture_output=True,
                            timeout=300,
                        )
                        try:
                            command(kind, warm, work, onnx)  # a first job starts the new cluster's workers
                            times[kind].append(command(kind, chunks, work, onnx))
                        finally:
                            subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=300)
                    else:
                        times[kind].append(command(kind, chunks, work, onnx))
            best = {kind: min(values) for kind, values in times.items()}
            rows.append((size, best))
        print(
            f"{'chunks':>7} {'in-process s':>13} {'ray s':>7} {'running ray s':>14} {'ray/in-process':>15} "
            f"{'running/in-process':>19}"
        )
        for size, best in rows:
            a, b, c = best["in-process"], best["ray"], best["running-ray"]
            print(f"{size:>7,} {a:>13.1f} {b:>7.1f} {c:>14.1f} {a / b:>15.2f} {a / c:>19.2f}")
        print("(ratios are throughput: above 1.00 the Ray command finished first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
