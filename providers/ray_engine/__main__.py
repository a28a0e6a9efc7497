"""`python -m providers.ray_engine INPUT... -o DIR`: run one Ray embedding job from a shell.

Settings (model, backend, data directory, cache) come from the `SIGNAL_HUB_*` environment, as for
the server. Exit codes: 0 done, 1 the job failed, 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from providers.errors import ConfigurationError, EmbeddingError, InputError
from providers.ray_engine.job import RayJobOptions, run_ray_job
from providers.ray_engine.output import SHARD_FORMATS
from providers.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m providers.ray_engine", description=__doc__)
    parser.add_argument("inputs", nargs="+", help="JSONL or Parquet files or directories ({id, text} records)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory for shards and manifest.json")
    parser.add_argument("--ray-address", help="ray://host:10001 or host:6379; default: RAY_ADDRESS, else a local Ray")
    parser.add_argument("--actors", type=int, help="actors embedding at once (default: one per CPU)")
    parser.add_argument(
        "--threads-per-actor", type=int, default=1, help="model threads (and CPUs asked for) per actor (default 1)"
    )
    parser.add_argument(
        "--gpus-per-actor", type=float, default=0.0, help="GPUs each actor asks for, e.g. 0.5 (default 0: CPU only)"
    )
    parser.add_argument(
        "--input-format",
        choices=("auto", "jsonl", "parquet"),
        default="auto",
        help="auto: by the inputs' suffixes (.jsonl or .parquet)",
    )
    parser.add_argument(
        "--shard-format", choices=SHARD_FORMATS, default="parquet", help="what each output shard is (default parquet)"
    )
    parser.add_argument("--shard-rows", type=int, default=1000, help="rows per shard, the unit of resumption")
    parser.add_argument("--batch-rows", type=int, default=256, help="rows per actor call")
    args = parser.parse_args(argv)
    options = RayJobOptions(
        inputs=tuple(args.inputs),
        output=args.output,
        address=args.ray_address,
        actors=args.actors,
        threads_per_actor=args.threads_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        input_format=args.input_format,
        shard_format=args.shard_format,
        shard_rows=args.shard_rows,
        batch_rows=args.batch_rows,
    )
    done = [0]

    def count(rows: int, total: int) -> None:
        done[0] = rows

    try:
        report = run_ray_job(options, Settings.from_env(), progress=count)
    except (ConfigurationError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EmbeddingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted after {done[0]:,} rows: complete shards stay in {args.output} and every finished "
            "vector is cached, so the same command again goes on from there.",
            file=sys.stderr,
        )
        return 130
    print(json.dumps(report.manifest(options)["counts"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
