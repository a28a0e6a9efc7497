"""The output directory of a Ray embedding job: its shards, its fingerprint and its manifest.

    DIR/job.json                 what the shards belong to (space, inputs, shard size): checked on a rerun
    DIR/shard-000000.parquet     id, vector, truncated; one file per `shard_rows` input rows, in input order
    DIR/manifest.json            written last: space, model, weights SHA-256, counts, tokens, wall time

A shard is written to a temporary name and renamed, so a shard file that exists is complete: a
killed job, rerun, keeps it and redoes only the shards that have no file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from providers.errors import ConfigurationError

__all__ = ["SHARD_FORMATS", "OutputDir", "ShardFormat", "read_shards"]

ShardFormat = Literal["parquet", "jsonl"]
SHARD_FORMATS: tuple[ShardFormat, ...] = ("parquet", "jsonl")

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.json"


class OutputDir:
    """Where one job's shards go; `claim` ties the directory to the job before anything is written."""

    def __init__(self, path: Path, shard_format: ShardFormat) -> None:
        if shard_format not in SHARD_FORMATS:
            raise ConfigurationError(f"unknown shard format {shard_format!r}; choose one of: parquet, jsonl.")
        self.path = path
        self.shard_format = shard_format

    def claim(self, fingerprint: Mapping[str, Any]) -> None:
        """Create the directory for this job, or accept it if an earlier run of the same job made it."""
        job_file = self.path / JOB_FILE
        if job_file.is_file():
            earlier = json.loads(job_file.read_text())
            if earlier != dict(fingerprint):
                changed = sorted(key for key in {*earlier, *fingerprint} if earlier.get(key) != fingerprint.get(key))
                raise ConfigurationError(
                    f"{self.path} holds the shards of another job (it differs in: {', '.join(changed)}); "
                    "write to a new directory, or delete this one to start over."
                )
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise ConfigurationError(f"{self.path} is not empty and holds no {JOB_FILE}: choose an empty directory.")
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomically(job_file, json.dumps(dict(fingerprint), indent=2, sort_keys=True) + "\n")
        (self.path / MANIFEST_FILE).unlink(missing_ok=True)

    def shard_path(self, shard: int) -> Path:
        return self.path / f"shard-{shard:06d}.{self.shard_format}"

    def is_complete(self, shard: int) -> bool:
        return self.shard_path(shard).is_file()

    def write_shard(
        self, shard: int, ids: Sequence[object], vectors: npt.NDArray[np.float32], truncated: Sequence[int]
    ) -> None:
        """Write one shard under a temporary name, then rename it into place."""
        path = self.shard_path(shard)
        temporary = path.with_name(f".{path.name}.partial")
        if self.shard_format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
            table = pa.table(
                {
                    "id": pa.array(list(ids)),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
                    "truncated": pa.array(truncated, type=pa.int32()),
                }
            )
            pq.write_table(table, temporary)
        else:
            with temporary.open("w", encoding="utf-8") as stream:
                for chunk_id, vector, dropped in zip(ids, vectors.tolist(), truncated, strict=True):
                    stream.write(json.dumps({"id": chunk_id, "vector": vector, "truncated": dropped}) + "\n")
        os.replace(temporary, path)

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        path = self.path / MANIFEST_FILE
        _write_atomically(path, json.dumps(dict(manifest), indent=2) + "\n")
        return path


def read_shards(path: Path) -> tuple[list[object], npt.NDArray[np.float32], list[int]]:
    """Every shard of a finished job's directory, in order: (ids, vectors, truncated)."""
    ids: list[object] = []
    vectors: list[npt.NDArray[np.float32]] = []
    truncated: list[int] = []
    for shard in sorted(path.glob("shard-*")):
        if shard.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(shard)
            ids += table["id"].to_pylist()
            column = table["vector"].combine_chunks()
            vectors.append(column.values.to_numpy().reshape(len(table), -1))
            truncated += table["truncated"].to_pylist()
        else:
            rows = [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]
            ids += [row["id"] for row in rows]
            vectors.append(np.asarray([row["vector"] for row in rows], dtype=np.float32).reshape(len(rows), -1))
            truncated += [row["truncated"] for row in rows]
    stacked = np.concatenate(vectors).astype(np.float32) if vectors else np.empty((0, 0), np.float32)
    return ids, stacked, truncated


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
