"""An embedding job on Ray Data: plan the shards, embed what the cache lacks on actors, write shards.

```python
report = run_ray_job(RayJobOptions(inputs=("chunks.jsonl",), output=Path("vectors")), settings)
report.embedded, report.cached, report.resumed, report.manifest_path
```

1. Plan (driver): the input is read with Ray Data in order and cut into shards of `shard_rows`
   rows. A shard whose file exists was completed by an earlier run and is skipped. For the rest,
   texts already in the cache (same vector space) are dropped; what remains goes to the object store.
2. Embed (actors): `map_batches` runs `EmbedBatch`, one local provider per actor.
3. Write (driver): as each shard's last vector arrives, its new vectors go into the cache and the
   shard file is written. So a killed job, rerun, redoes at most the shards that had no file.

Why the actor pool cannot starve: Ray Data's read and write tasks each want a CPU, and a pool of
one 1-CPU actor per core holds them all. With Ray 2.60, read_json → two 1-CPU actors → write on a
2-CPU Ray waits for ever: the read task stays "backpressured: ResourceBudget" (3 of 2 CPUs asked).
Here nothing but the actors runs on Ray while they work: the input is read before they start,
the embedding dataset is built from blocks already in the object store (no read tasks), and the
driver writes the shards (no write tasks). So each actor can hold a whole CPU (fractional CPUs
would let Ray put more work on a core than it has); it asks for `threads_per_actor` CPUs, fewer
only when more actors than CPUs are asked for, so the pool always fits the cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from providers.errors import ConfigurationError, EmbeddingError, InputError, ProviderUnavailableError
from providers.local import LocalProvider, available_local_models
from providers.local_model.onnx_export import sha256_of_file
from providers.ray_engine.actor import EmbedBatch
from providers.ray_engine.connect import RayConnection, connect, import_ray
from providers.ray_engine.output import OutputDir, ShardFormat
from providers.ray_engine.shards import ShardCollector, check_texts, plan_shard
from providers.settings import Settings
from providers.storage.cache import EmbeddingCache

__all__ = ["InputFormat", "JobCancelled", "RayJobOptions", "RayJobReport", "run_ray_job", "size_actor_pool"]

InputFormat = Literal["auto", "jsonl", "parquet"]
_JSONL_SUFFIXES = (".jsonl", ".json")
_PARQUET_SUFFIXES = (".parquet", ".pq")

Progress = Callable[[int, int], None]
"""Called as `progress(rows done, rows in the job)` from the driver's thread."""


@dataclass(frozen=True, kw_only=True)
class RayJobOptions:
    inputs: tuple[str, ...]
    """Files or directories: local paths or any URI pyarrow reaches (s3://, gs://, hdfs://...)."""
    output: Path
    """Local directory for the shards and manifest.json."""
    address: str | None = None
    """A cluster (`ray://host:10001`, `host:6379`, `auto`); None: RAY_ADDRESS, else an embedded local Ray."""
    actors: int | None = None
    """Actors embedding at once; None: one per `threads_per_actor` CPUs of the cluster."""
    threads_per_actor: int = 1
    gpus_per_actor: float = 0.0
    input_format: InputFormat = "auto"
    shard_format: ShardFormat = "parquet"
    shard_rows: int = 1000
    """Rows per output shard: the unit of resumption."""
    batch_rows: int = 256
    """Rows per `map_batches` call on an actor."""
    actor_start_timeout_s: int = 300
    """How long the actors may take to start: their model loads (on a new node, its ONNX export is made)."""


@dataclass
class RayJobReport:
    """What a job did; also what manifest.json holds."""

    output: Path
    manifest_path: Path
    space: str
    model: str
    weights_sha256: str
    where: str
    rows: int = 0
    shards: int = 0
    embedded: int = 0
    """Rows the actors embedded in this run."""
    cached: int = 0
    """Rows answered from the cache in this run."""
    resumed: int = 0
    """Rows in shards an earlier run had completed."""
    tokens: int = 0
    wall_time_s: float = 0.0
    plan_s: float = 0.0
    """Of the wall time, the driver's planning pass: reading the input, checking it, asking the cache."""
    actors: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per actor (host:pid): rows embedded, peak RSS in MB, how its model runs."""

    def count(self, batch: dict[str, Any]) -> None:
        """Count an actor's output batch: rows, tokens, and per actor its rows and peak memory."""
        self.embedded += len(batch["row"])
        self.tokens += int(batch["tokens"].sum())
        for worker, runtime, rss in zip(batch["worker"], batch["runtime"], batch["peak_rss_kb"], strict=True):
            seen = self.actors.setdefault(str(worker), {"rows": 0, "peak_rss_mb": 0.0, "runtime": str(runtime)})
            seen["rows"] += 1
            seen["peak_rss_mb"] = max(seen["peak_rss_mb"], round(int(rss) / 1024, 1))

    def manifest(self, options: RayJobOptions) -> dict[str, Any]:
        return {
            "engine": "ray",
            "space": self.space,
            "provider": "local",
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "inputs": list(options.inputs),
            "format": options.shard_format,
            "columns": ["id", "vector", "truncated"],
            "counts": {
                "rows": self.rows,
                "shards": self.shards,
                "embedded": self.embedded,
                "cached": self.cached,
                "resumed": self.resumed,
            },
            "tokens": self.tokens,
            "wall_time_s": round(self.wall_time_s, 3),
            "plan_s": round(self.plan_s, 3),
            "ray": {"where": self.where, "actors": self.actors},
        }


def run_ray_job(
    options: RayJobOptions,
    settings: Settings,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> RayJobReport:
    """Embed every row of the inputs into `options.output`; blocks, so run it in a worker thread from async code.

    `cancel` stops the job between batches (completed shards stay for the rerun) with `JobCancelled`.
    """
    _check_options(options)
    import_ray()  # before anything is written: without Ray, say how to install it
    started = time.monotonic()
    provider = LocalProvider.from_settings(settings)  # names the space; its model loads only on the actors
    output = OutputDir(options.output, options.shard_format)
    output.claim({"space": provider.space, "inputs": list(options.inputs), "shard_rows": options.shard_rows})
    cache = EmbeddingCache(settings.resolved_data_dir / "cache.sqlite3") if settings.cache else None
    try:
        with connect(options.address) as connection:
            report = RayJobReport(
                output=options.output,
                manifest_path=options.output / "manifest.json",
                space=provider.space,
                model=provider.model,
                weights_sha256=_weights_sha256(settings),
                where=connection.where,
            )
            collector = ShardCollector(connection.ray, output, cache, provider.space, provider.dimensions)
            run = _Run(options, settings, connection, output, cache, provider, collector, report, progress, cancel)
            planning = time.monotonic()
            run.plan()
            report.plan_s = time.monotonic() - planning
            if collector.pending_rows:
                run.embed()
            report.wall_time_s = time.monotonic() - started
            output.write_manifest(report.manifest(options))
            return report
    finally:
        if cache is not None:
            cache.close()


class JobCancelled(EmbeddingError):
    """The job was cancelled; the shards it completed stay, and a rerun resumes after them."""


@dataclass
class _Run:
    options: RayJobOptions
    settings: Settings
    connection: RayConnection
    output: OutputDir
    cache: EmbeddingCache | None
    provider: LocalProvider
    collector: ShardCollector
    report: RayJobReport
    progress: Progress | None
    cancel: threading.Event | None

    def plan(self) -> None:
        """Check each shard's rows; skip shards done by an earlier run; send on what the cache lacks."""
        options, report = self.options, self.report
        dataset = _read(self.connection.ray, options)
        dataset.context.execution_options.preserve_order = True  # shard k must be the same rows on a rerun
        with _iterating(dataset.iter_batches(batch_size=options.shard_rows, batch_format="pyarrow")) as batches:
            for shard, batch in enumerate(batches):
                self._check_cancelled()
                report.rows += batch.num_rows
                report.shards += 1
                first_row = shard * options.shard_rows
                if self.output.is_complete(shard):
                    report.resumed += batch.num_rows
                    continue
                check_texts(batch, first_row, self.settings.limits)
                plan = plan_shard(
                    self.connection.ray, batch, shard, first_row, self.cache, self.provider, options.batch_rows
                )
                report.cached += plan.size - plan.pending
                self.collector.add(plan)
        self._report_progress()

    def embed(self) -> None:
        """Run the actors over the rows the cache lacked; each shard is written as its last vector arrives."""
        options, report = self.options, self.report
        actors, actor_cpus = size_actor_pool(self.connection.cpus, options.actors, options.threads_per_actor)
        dataset = self.collector.dataset().map_batches(
            EmbedBatch,
            fn_constructor_kwargs={"settings": self.settings, "threads": options.threads_per_actor},
            batch_size=options.batch_rows,
            batch_format="numpy",
            # Two calls queued per actor: the next block is there when one ends, and no actor hoards blocks.
            compute=self.connection.ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
            num_cpus=actor_cpus,
            num_gpus=options.gpus_per_actor or None,
        )
        # Start every actor before the first block goes out: else the first one up takes most blocks, and
        # a pool the cluster cannot hold fails after this wait instead of waiting for ever.
        dataset.context.wait_for_min_actors_s = options.actor_start_timeout_s
        pool = f"{actors} actor(s) of {actor_cpus:g} CPU and {options.gpus_per_actor:g} GPU"
        with _iterating(dataset.iter_batches(batch_size=None, batch_format="numpy")) as batches:
            for batch in _translated(self.connection, batches, pool, options.actor_start_timeout_s):
                self._check_cancelled()
                self.collector.take(batch)
                report.count(batch)
                self._report_progress()

    def _check_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            done = self.report.shards - self.collector.open_shards
            raise JobCancelled(f"cancelled; {done} shard(s) are complete, and a rerun starts after them.")

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.report.rows - self.collector.pending_rows, self.report.rows)


def _translated(connection: RayConnection, batches: Iterator[Any], pool: str, timeout_s: int) -> Iterator[Any]:
    try:
        yield from batches
    except connection.ray.exceptions.GetTimeoutError as exc:
        raise ProviderUnavailableError(
            f"the Ray cluster ({connection.where}) did not start {pool} within {timeout_s} s: "
            "it lacks the resources; ask for fewer actors, fewer GPUs, or add nodes."
        ) from exc


@contextmanager
def _iterating(batches: Iterable[Any]) -> Generator[Iterator[Any], None, None]:
    """Iterate Ray Data batches and close the iterator on the way out, so its executor stops (and its
    actors free their CPUs) now, not when an exception's traceback is collected."""
    iterator = iter(batches)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def size_actor_pool(cpus: float, actors: int | None, threads: int) -> tuple[int, float]:
    """(actors, CPUs each asks Ray for): by default one actor per `threads` CPUs; never more CPUs than exist."""
    if cpus <= 0:
        raise ConfigurationError("the Ray cluster has no CPUs; add a node with `ray start --num-cpus N`.")
    count = actors if actors is not None else max(int(cpus // threads), 1)
    return count, min(float(threads), cpus / count)


def _read(ray: Any, options: RayJobOptions) -> Any:
    fmt = options.input_format
    if fmt == "auto":
        suffixes = {Path(path.rstrip("/")).suffix.lower() for path in options.inputs}
        if suffixes and suffixes <= set(_PARQUET_SUFFIXES):
            fmt = "parquet"
        elif suffixes and suffixes <= set(_JSONL_SUFFIXES):
            fmt = "jsonl"
        else:
            raise ConfigurationError(
                f"cannot tell the input format from {', '.join(options.inputs)}: name the files "
                "*.jsonl or *.parquet, or pass the format (jsonl or parquet)."
            )
    paths = list(options.inputs)
    try:
        # pyarrow's JSON reader takes one record per line.
        dataset = ray.data.read_parquet(paths) if fmt == "parquet" else ray.data.read_json(paths)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {', '.join(paths)}: {exc}") from exc
    missing = {"id", "text"} - set(dataset.columns())
    if missing:
        named = " or ".join(sorted(missing))
        raise InputError(f"the input has no {named} column: every record needs an id and a text.")
    return dataset.select_columns(["id", "text"])


def _check_options(options: RayJobOptions) -> None:
    if not options.inputs:
        raise ConfigurationError("no input: give JSONL or Parquet files (or directories of them).")
    for name in ("shard_rows", "batch_rows", "threads_per_actor"):
        if getattr(options, name) < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {getattr(options, name)}.")
    if options.actors is not None and options.actors < 1:
        raise ConfigurationError(f"actors must be at least 1, got {options.actors}.")
    if options.gpus_per_actor < 0:
        raise ConfigurationError(f"gpus_per_actor must be zero or more, got {options.gpus_per_actor}.")


def _weights_sha256(settings: Settings) -> str:
    """The SHA-256 of the weights the actors load: the reviewed one for the packaged model, else hashed here."""
    path, expected = available_local_models(settings)[settings.local_model]
    if expected is not None:
        return expected
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return sha256_of_file(path / name)
    raise ConfigurationError(f"no model.safetensors or pytorch_model.bin at {path}.")
