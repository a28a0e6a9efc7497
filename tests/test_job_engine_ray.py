"""The Ray Data engine in the CLI and the job tools: the same vectors as the in-process engine.

One local Ray (2 CPUs) serves the module, this process connected to it: the engine uses the
caller's Ray. Its tests are `slow` (Ray takes seconds to start); the error tests need no Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client

from providers import Settings
from providers.local import PACKAGED_MODEL_SHA256, LocalProvider
from providers.ray_engine import INSTALL_HINT, read_shards
from providers.ray_engine.connect import running_local_ray
from providers.ray_engine.output import OutputDir
from providers.ray_engine.shards import ShardCollector, plan_shard
from providers.storage.cache import EmbeddingCache
from server import build_server
from server.commands.embed import add_commands, run_embed
from server.commands.ray_shards import count_rows, is_directory_output

TEXTS = [f"def function_{i}(value):\n    return value * {i} + {i % 5}" for i in range(24)]
TEXTS[3] = "\n".join(f"def f_{i}(argument): return argument * {i}" for i in range(120))  # cut to the window


def write_chunks(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_output(ours: Path, reference: Path) -> None:
    got, want = rows(ours), rows(reference)
    assert [r["id"] for r in got] == [r["id"] for r in want] == [f"c{i}" for i in range(len(TEXTS))]
    assert [(r["space"], r["truncated"], r["dropped_tokens"]) for r in got] == [
        (r["space"], r["truncated"], r["dropped_tokens"]) for r in want
    ]
    assert any(r["truncated"] for r in got)
    cosines = np.sum(np.asarray([r["embedding"] for r in got]) * np.asarray([r["embedding"] for r in want]), axis=1)
    assert cosines.min() >= 0.9999


def embed(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return run_embed(parser.parse_args(["embed", *argv]), settings)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_cli_engine_ray_writes_what_the_in_process_engine_writes(
    local_ray: None, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_chunks(tmp_path / "chunks.jsonl")
    local = Settings(data_dir=settings.data_dir, provider="local", local_threads=1)
    assert embed(local, str(source), "-o", str(tmp_path / "in-process.jsonl"), "--no-cache", "--no-progress") == 0
    capsys.readouterr()

    argv = [str(source), "-o", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--actors", "1", "--no-progress"]
    assert embed(local, *argv) == 0

    assert "embedded 24, cached 0, failed 0" in capsys.readouterr().err
    assert_same_output(tmp_path / "ray.jsonl", tmp_path / "in-process.jsonl")
    assert not (settings.resolved_data_dir / "ray_jobs").exists() or not any(
        (settings.resolved_data_dir / "ray_jobs").iterdir()
    )  # the shards are gone once written


@pytest.fixture
async def client(settings: Settings, project: Path) -> AsyncIterator[Client]:
    local = Settings(data_dir=settings.data_dir, provider="local", cache=False, local_threads=1)
    async with Client(build_server(local), read_timeout_seconds=120) as mcp:
        yield mcp


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content  # type: ignore[no-any-return]


async def finished(client: Client, job_id: str) -> dict[str, Any]:
    with anyio.fail_after(180):
        while (status := await call(client, "job_status", job_id=job_id))["status"] in ("queued", "running"):
            await anyio.sleep(0.1)
    return status


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning")  # 2 actors, 1 block
async def test_a_ray_job_writes_what_an_in_process_job_writes(local_ray: None, client: Client, project: Path) -> None:
    source = write_chunks(project / "chunks.jsonl")
    reference = await call(client, "start_embedding_job", input=str(source), output=str(project / "a.jsonl"))
    assert (await finished(client, reference["job_id"]))["status"] == "done"

    started = await call(
        client, "start_embedding_job", input=str(source), output=str(project / "b.jsonl"), engine="ray"
    )
    status = await finished(client, started["job_id"])

    assert started["engine"] == "ray" and started["sync_usd"] is None
    assert status["status"] == "done" and status["done"] == len(TEXTS), status
    assert_same_output(project / "b.jsonl", project / "a.jsonl")


# --- errors (no Ray needed) --------------------------------------------------------------------------


def test_cli_engine_ray_without_ray_says_how_to_install_it_in_one_line_with_exit_2(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    source = write_chunks(tmp_path / "chunks.jsonl")
    assert embed(settings, str(source), "-o", str(tmp_path / "out.jsonl"), "--engine", "ray") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and INSTALL_HINT in errors[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_engine_ray_at_an_address_nothing_answers_on_fails_naming_it(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_chunks(tmp_path / "chunks.jsonl")
    argv = [str(source), "-o", str(tmp_path / "out.jsonl"), "--engine", "ray", "--ray-address", "127.0.0.1:9"]
    assert embed(settings, *argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in errors[0]


@pytest.mark.anyio
async def test_start_embedding_job_with_ray_missing_is_a_tool_error(
    client: Client, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    source = write_chunks(project / "chunks.jsonl")
    arguments = {"input": str(source), "output": str(project / "out.jsonl"), "engine": "ray"}
    result = await client.call_tool("start_embedding_job", arguments)
    assert result.is_error and INSTALL_HINT in result.content[0].text  # type: ignore[union-attr]
    listed = await call(client, "list_jobs")
    assert listed["jobs"] == []  # refused before it was queued


@pytest.mark.anyio
async def test_cancelling_a_ray_run_stops_its_thread_and_waits_for_it() -> None:
    from providers.ray_engine import JobCancelled
    from providers.ray_engine.job_engine import _run_in_thread

    stopped: list[bool] = []

    def job(cancel: Any, progress: Any) -> Any:
        progress(1, 2)
        assert cancel.wait(10)
        stopped.append(True)
        raise JobCancelled("cancelled")

    seen: list[int] = []
    with anyio.move_on_after(0.2) as scope:
        await _run_in_thread(job, seen.append)
    assert scope.cancelled_caught and stopped == [True] and seen == [1]


@pytest.mark.anyio
async def test_a_failure_inside_ray_fails_the_job_not_the_server() -> None:
    from providers import EmbeddingError
    from providers.ray_engine.job_engine import _run_in_thread

    def job(cancel: Any, progress: Any) -> Any:
        raise RuntimeError("the raylet died")

    with pytest.raises(EmbeddingError, match="the Ray job failed: RuntimeError: the raylet died"):
        await _run_in_thread(job, lambda _: None)


@pytest.mark.slow
def test_cli_engine_ray_with_a_directory_writes_shards_and_the_manifest_the_ray_issue_promised(
    local_ray: None, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_chunks(tmp_path / "chunks.jsonl")
    local = Settings(data_dir=settings.data_dir, provider="local", local_threads=1, cache=False)
    assert embed(local, str(source), "-o", str(tmp_path / "in-process.jsonl"), "--no-progress") == 0
    capsys.readouterr()

    vectors = tmp_path / "vectors"
    argv = [str(source), "-o", str(vectors), "--engine", "ray", "--actors", "1", "--no-progress"]
    assert embed(local, *argv, "--shard-format", "jsonl", "--shard-rows", "10") == 0

    err = capsys.readouterr().err
    assert f"wrote 24 vectors in 3 shards to {vectors}" in err
    assert "too few for Ray to pay off" in err  # 24 chunks on a local Ray: in-process is faster
    assert sorted(p.name for p in vectors.glob("shard-*")) == [f"shard-00000{i}.jsonl" for i in range(3)]
    manifest = json.loads((vectors / "manifest.json").read_text())
    assert manifest["space"] == "local:all-MiniLM-L6-v2:384:l2"
    assert (manifest["model"], manifest["weights_sha256"]) == ("all-MiniLM-L6-v2", PACKAGED_MODEL_SHA256)
    assert manifest["counts"]["rows"] == 24 and manifest["counts"]["embedded"] == 24
    assert manifest["tokens"] > 0 and manifest["wall_time_s"] > 0
    ids, shard_vectors, _ = read_shards(vectors)
    want = {r["id"]: np.asarray(r["embedding"], np.float32) for r in rows(tmp_path / "in-process.jsonl")}
    assert list(ids) == list(want)
    cosines = np.sum(np.asarray(shard_vectors) * np.stack(list(want.values())), axis=1)
    assert cosines.min() >= 0.9999


def test_shard_options_without_a_ray_directory_output_are_refused(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_chunks(tmp_path / "chunks.jsonl")
    assert embed(settings, str(source), "-o", str(tmp_path / "out.jsonl"), "--shard-format", "jsonl") == 2
    assert "--shard-format and --shard-rows go with --engine ray and a directory as --output" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("output", "directory"),
    [("vectors", True), ("vectors/", True), ("out.jsonl", False), ("out.npy", False), ("-", False)],
)
def test_a_name_without_a_file_suffix_is_a_shard_directory(output: str, directory: bool) -> None:
    assert is_directory_output(output) is directory


def test_jsonl_and_parquet_inputs_are_counted_ahead(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    write_chunks(tmp_path / "in" / "a.jsonl")
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["a", "b"]}), tmp_path / "b.parquet")
    assert count_rows((str(tmp_path / "in"), str(tmp_path / "b.parquet"))) == len(TEXTS) + 2


@pytest.mark.slow
def test_each_actor_result_is_cached_as_it_arrives_not_when_its_shard_is_whole(
    local_ray: None, settings: Settings, tmp_path: Path
) -> None:
    import pyarrow as pa
    import ray

    provider = LocalProvider.from_settings(settings)
    cache = EmbeddingCache(tmp_path / "cache.sqlite3")
    texts = ["def a(): pass", "def b(): pass", "def c(): pass"]
    batch = pa.table({"id": ["a", "b", "c"], "text": texts})
    plan = plan_shard(ray, batch, 0, 0, cache, provider, block_rows=2)
    collector = ShardCollector(ray, OutputDir(tmp_path / "out", "jsonl"), cache, provider.space, provider.dimensions)
    collector.add(plan)
    vectors = np.eye(3, provider.dimensions, dtype=np.float32)

    collector.take(
        {"row": np.array([0, 1]), "shard": np.array([0, 0]), "vector": vectors[:2], "truncated": np.zeros(2)}
    )

    # The shard still waits for its third row, yet an interrupted run would keep these two.
    assert collector.open_shards == 1
    found = cache.get_many(provider.space, texts, provider.dimensions)
    assert set(found) == set(texts[:2])
    np.testing.assert_array_equal(found[texts[1]].vector, vectors[1])
    cache.close()


def test_a_ray_left_running_by_ray_start_is_reused_only_while_its_gcs_runs() -> None:
    from types import SimpleNamespace

    def ray_with(address: str | None, live: set[str]) -> Any:
        return SimpleNamespace(
            _private=SimpleNamespace(
                utils=SimpleNamespace(read_ray_address=lambda: address),
                services=SimpleNamespace(find_gcs_addresses=lambda: frozenset(live)),
            )
        )

    assert running_local_ray(ray_with("127.0.0.1:6379", {"127.0.0.1:6379"})) == "127.0.0.1:6379"
    assert running_local_ray(ray_with("127.0.0.1:6379", set())) is None  # a stale file from a stopped Ray
    assert running_local_ray(ray_with(None, {"127.0.0.1:6379"})) is None
    assert running_local_ray(SimpleNamespace()) is None  # a Ray without those helpers
