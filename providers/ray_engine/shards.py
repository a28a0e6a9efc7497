"""Shards on their way through a job: planned against the cache, filled by the actors, written when whole.

The driver keeps only counts and object references per open shard: the texts to embed and the
vectors the cache already had wait in Ray's object store (which spills to disk), not in its memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from providers.base import EmbeddingProvider
from providers.errors import InputError
from providers.ray_engine.output import OutputDir
from providers.settings import InputLimits
from providers.storage.cache import EmbeddingCache

__all__ = ["ShardCollector", "ShardPlan", "check_texts", "plan_shard"]


@dataclass
class ShardPlan:
    shard: int
    first_row: int
    size: int
    pending: int
    """Rows the actors must embed."""
    frame: Any
    """Object ref of (ids, cached positions, cached vectors, cached dropped tokens)."""
    texts: list[Any]
    """Object refs of the Arrow tables {row, shard, text} the actors embed, in row order: one block each."""
    parts: list[dict[str, npt.NDArray[Any]]] = field(default_factory=list)
    received: int = 0
    text_by_row: dict[int, str] | None = None
    """The pending rows' texts, fetched at the shard's first result to cache each result as it comes."""


def check_texts(batch: Any, first_row: int, limits: InputLimits) -> None:
    """Every row has an id and a non-blank text within the size limit, or an `InputError` naming the row."""
    import pyarrow.compute as pc

    missing = [name for name in ("id", "text") if name not in batch.column_names]
    if missing:
        raise InputError(f"the input has no {' or '.join(missing)} column: every record needs an id and a text.")
    text = batch["text"]
    if not (text.type.equals("string") or text.type.equals("large_string")):
        raise InputError(f'"text" must be a string column, not {text.type}.')
    problems = [
        (pc.or_kleene(pc.is_null(text), pc.equal(pc.utf8_trim_whitespace(text), "")), "is empty or missing"),
        (pc.greater(pc.utf8_length(text), limits.max_text_chars), f"is over {limits.max_text_chars:,} characters"),
        (pc.is_null(batch["id"]), "has no id"),
    ]
    for mask, reason in problems:
        bad = np.flatnonzero(mask.fill_null(True).to_numpy(zero_copy_only=False))
        if bad.size:
            row = int(bad[0])
            raise InputError(
                f"row {first_row + row} (id {batch['id'][row].as_py()!r}) {reason}"
                f"{f' (and {bad.size - 1} more in its shard)' if bad.size > 1 else ''}: fix the input and rerun."
            )


def plan_shard(
    ray: Any,
    batch: Any,
    shard: int,
    first_row: int,
    cache: EmbeddingCache | None,
    provider: EmbeddingProvider,
    block_rows: int,
) -> ShardPlan:
    """Split a shard's rows into those the cache answers and those the actors must embed.

    The rows to embed go to the object store in blocks of `block_rows`: blocks of one actor call
    each spread evenly over the actors, where whole shards went to whichever actor started first.
    """
    import pyarrow as pa

    texts: list[str] = batch["text"].to_pylist()
    found = cache.get_many(provider.space, texts, provider.dimensions) if cache is not None else {}
    hit = np.fromiter((text in found for text in texts), dtype=bool, count=len(texts))
    positions = np.flatnonzero(hit)
    cached_vectors = np.stack([found[texts[i]].vector for i in positions]) if positions.size else None
    cached_dropped = np.array([found[texts[i]].dropped_tokens for i in positions], dtype=np.int32)
    frame = ray.put((batch["id"].to_pylist(), positions, cached_vectors, cached_dropped))
    miss = np.flatnonzero(~hit)
    pending = pa.table(
        {
            "row": pa.array(first_row + miss, type=pa.int64()),
            "shard": pa.array(np.full(miss.size, shard), type=pa.int64()),
            "text": batch["text"].take(pa.array(miss, type=pa.int64())),
        }
    )
    blocks = [ray.put(pending.slice(start, block_rows)) for start in range(0, miss.size, block_rows)]
    return ShardPlan(shard, first_row, len(texts), int(miss.size), frame, blocks)


class ShardCollector:
    """Holds the open shards; writes each one (and caches its new vectors) once its last vector is in."""

    def __init__(self, ray: Any, output: OutputDir, cache: EmbeddingCache | None, space: str, dimensions: int) -> None:
        self.ray = ray
        self._output = output
        self._cache = cache
        self._space = space
        self._dimensions = dimensions
        self._open: dict[int, ShardPlan] = {}
        self.pending_rows = 0

    @property
    def open_shards(self) -> int:
        return len(self._open)

    def add(self, plan: ShardPlan) -> None:
        if plan.pending == 0:
            self._write(plan)
        else:
            self._open[plan.shard] = plan
            self.pending_rows += plan.pending

    def dataset(self) -> Any:
        """The rows to embed, one block per shard, straight from the object store."""
        return self.ray.data.from_arrow_refs([block for plan in self._open.values() for block in plan.texts])

    def take(self, batch: dict[str, npt.NDArray[Any]]) -> None:
        """File an actor's output under its shards, caching its vectors now; write the shards it completes.

        Caching each result as it arrives, not when its shard is whole, is what keeps an interrupted
        job's finished vectors: a rerun gets them from the cache.
        """
        shards = batch["shard"]
        for shard in np.unique(shards):
            rows = shards == shard
            plan = self._open[int(shard)]
            part = {name: batch[name][rows] for name in ("row", "vector", "truncated")}
            self._cache_part(plan, part)
            plan.parts.append(part)
            plan.received += int(rows.sum())
            self.pending_rows -= int(rows.sum())
            if plan.received == plan.pending:
                self._write(self._open.pop(plan.shard))

    def _write(self, plan: ShardPlan) -> None:
        ids, positions, cached_vectors, cached_dropped = self.ray.get(plan.frame)
        vectors = np.empty((plan.size, self._dimensions), dtype=np.float32)
        truncated = np.zeros(plan.size, dtype=np.int32)
        if positions.size:
            vectors[positions] = cached_vectors
            truncated[positions] = cached_dropped
        if plan.parts:
            rows = np.concatenate([part["row"] for part in plan.parts])
            order = np.argsort(rows)
            new_positions = rows[order] - plan.first_row
            new_vectors = np.concatenate([part["vector"] for part in plan.parts])[order].astype(np.float32)
            new_dropped = np.concatenate([part["truncated"] for part in plan.parts])[order]
            vectors[new_positions] = new_vectors
            truncated[new_positions] = new_dropped
        self._output.write_shard(plan.shard, ids, vectors, truncated.tolist())

    def _cache_part(self, plan: ShardPlan, part: dict[str, npt.NDArray[Any]]) -> None:
        if self._cache is None:
            return
        if plan.text_by_row is None:
            plan.text_by_row = {
                int(row): text
                for block in self.ray.get(plan.texts)
                for row, text in zip(block["row"].to_pylist(), block["text"].to_pylist(), strict=True)
            }
        texts = [plan.text_by_row[int(row)] for row in part["row"]]
        self._cache.put_many(self._space, texts, part["vector"].astype(np.float32), part["truncated"].tolist())
