"""The Ray Data engine: on a simulated two-node cluster, against the in-process local provider.

One cluster (`ray.cluster_utils.Cluster`, 2 nodes x 1 CPU) serves the whole module: Ray takes
seconds to start. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.corpus import code_chunks
from providers import ConfigurationError, InputError, ProviderUnavailableError, Settings
from providers.local import PACKAGED_MODEL_SHA256, LocalProvider
from providers.ray_engine import INSTALL_HINT, JobCancelled, RayJobOptions, read_shards, run_ray_job, size_actor_pool
from providers.ray_engine.__main__ import main
from providers.ray_engine.actor import EmbedBatch
from providers.ray_engine.output import OutputDir
from providers.ray_engine.shards import check_texts
from providers.storage.cache import EmbeddingCache

ROOT = Path(__file__).resolve().parents[1]
TEXTS = code_chunks(48)
# A text longer than the model's window, so `truncated` is exercised.
TEXTS[5] = "\n".join(f"def function_{i}(argument): return argument * {i}" for i in range(120))
_JOB_DEADLINE_S = 180

Reference = tuple[npt.NDArray[np.float32], list[int], int]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A two-node Ray cluster of one CPU each, this process connected to it; yields its address."""
    import ray
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes(timeout=60)
        ray.init(address=nodes.address, log_to_driver=False, logging_level="WARNING")
        yield str(nodes.address)
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, onnx_exports: Path) -> Reference:
    """The in-process provider's vectors, dropped tokens and tokens for TEXTS."""
    data_dir = tmp_path_factory.mktemp("reference")
    (data_dir / "onnx").symlink_to(onnx_exports, target_is_directory=True)
    provider = LocalProvider.from_settings(Settings(data_dir=data_dir, local_threads=1))
    result = anyio.run(provider.embed, TEXTS)
    dropped = [result.truncated.get(i, 0) for i in range(len(TEXTS))]
    return result.vectors, dropped, result.tokens


def write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)))
    return path


def assert_same_vectors(output: Path, reference: Reference) -> None:
    ids, vectors, truncated = read_shards(output)
    assert ids == list(range(len(TEXTS)))
    cosines = np.sum(vectors * reference[0], axis=1)  # both L2-normalised
    assert cosines.min() >= 0.9999
    assert truncated == reference[1]


@pytest.mark.slow
def test_a_two_node_cluster_writes_the_in_process_vectors_in_input_order_with_a_manifest(
    cluster: str, tmp_path: Path, data_dir: Path, reference: Reference
) -> None:
    import ray

    assert len([node for node in ray.nodes() if node["Alive"]]) == 2
    source = write_jsonl(tmp_path / "chunks.jsonl", TEXTS)
    options = RayJobOptions(inputs=(str(source),), output=tmp_path / "out", shard_rows=16, batch_rows=8)
    seen: list[tuple[int, int]] = []

    report = run_ray_job(options, Settings(data_dir=data_dir), progress=lambda done, total: seen.append((done, total)))

    assert_same_vectors(tmp_path / "out", reference)
    assert sorted(path.name for path in (tmp_path / "out").glob("shard-*")) == [
        f"shard-00000{i}.parquet" for i in range(3)
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["space"] == "local:all-MiniLM-L6-v2:384:l2"
    assert manifest["model"] == "all-MiniLM-L6-v2"
    assert manifest["weights_sha256"] == PACKAGED_MODEL_SHA256
    assert manifest["counts"] == {"rows": 48, "shards": 3, "embedded": 48, "cached": 0, "resumed": 0}
    assert manifest["tokens"] == reference[2]
    assert manifest["wall_time_s"] > 0
    actors = manifest["ray"]["actors"]
    assert len(actors) == 2  # one per node: each node has the one CPU an actor asks for
    assert sum(actor["rows"] for actor in actors.values()) == 48
    for actor in actors.values():
        assert actor["peak_rss_mb"] > 50 and actor["runtime"] == "onnx-int8 on cpu, 1 thread(s)"
    assert report.manifest_path == tmp_path / "out" / "manifest.json"
    assert seen[0] == (0, 48) and seen[-1] == (48, 48)


@pytest.mark.slow
def test_cached_texts_are_not_embedded_and_new_vectors_fill_the_cache(
    cluster: str, tmp_path: Path, data_dir: Path, reference: Reference
) -> None:
    settings = Settings(data_dir=data_dir)
    space = LocalProvider.from_settings(settings).space
    cache = EmbeddingCache(data_dir / "cache.sqlite3")
    try:
        cache.put_many(space, TEXTS[::2], reference[0][::2], reference[1][::2])
        source = tmp_path / "chunks.parquet"
        pq.write_table(pa.table({"id": list(range(len(TEXTS))), "text": TEXTS}), source)
        options = RayJobOptions(inputs=(str(source),), output=tmp_path / "out", shard_format="jsonl", shard_rows=16)

        report = run_ray_job(options, settings)

        assert (report.embedded, report.cached) == (24, 24)
        assert_same_vectors(tmp_path / "out", reference)
        assert len(cache.get_many(space, TEXTS, 384)) == len(TEXTS)

        again = run_ray_job(RayJobOptions(inputs=(str(source),), output=tmp_path / "again"), settings)

        assert (again.embedded, again.cached, again.actors) == (0, 48, {})
        assert_same_vectors(tmp_path / "again", reference)
    finally:
        cache.close()


@pytest.mark.slow
def test_a_killed_job_rerun_redoes_only_the_shards_that_had_not_completed(
    cluster: str, tmp_path: Path, data_dir: Path, reference: Reference
) -> None:
    source = write_jsonl(tmp_path / "chunks.jsonl", TEXTS)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "providers.ray_engine", str(source), "-o", str(output)]
    command += ["--ray-address", cluster, "--shard-rows", "4", "--batch-rows", "4"]
    env = {**os.environ, "SIGNAL_HUB_DATA_DIR": str(data_dir)}
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + _JOB_DEADLINE_S
        while not list(output.glob("shard-*")) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(timeout=30)
    completed = len(list(output.glob("shard-*")))
    assert 0 < completed < 12, f"{completed} of 12 shards done when the job was killed: nothing to show"

    report = run_ray_job(
        RayJobOptions(inputs=(str(source),), output=output, shard_rows=4, batch_rows=4), Settings(data_dir=data_dir)
    )

    assert report.resumed == 4 * completed
    assert report.embedded + report.cached == 48 - report.resumed
    assert_same_vectors(output, reference)


def test_an_actor_embeds_a_batch_like_the_in_process_provider(data_dir: Path, reference: Reference) -> None:
    actor = EmbedBatch(Settings(data_dir=data_dir, openai_api_key="sk-not-for-actors"), threads=1)
    try:
        out = actor({"row": np.arange(10, 18), "shard": np.zeros(8, dtype=np.int64), "text": np.array(TEXTS[:8])})
    finally:
        actor.close()
    assert list(out["row"]) == list(range(10, 18))
    assert np.sum(out["vector"] * reference[0][:8], axis=1).min() >= 0.9999
    assert list(out["truncated"]) == reference[1][:8]
    assert out["tokens"].sum() > 0 and out["peak_rss_kb"].min() > 0
    assert actor.provider.runtime is not None and actor.provider.runtime.threads == 1


def test_without_ray_the_job_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    with pytest.raises(ConfigurationError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        run_ray_job(RayJobOptions(inputs=("chunks.jsonl",), output=tmp_path / "out"), Settings(data_dir=tmp_path))
    assert not (tmp_path / "out").exists()


def test_an_address_nothing_answers_on_fails_in_seconds_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = RayJobOptions(inputs=("chunks.jsonl",), output=tmp_path / "out", address=f"ray://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match=f"127.0.0.1:{port}"):
        run_ray_job(options, Settings(data_dir=tmp_path))
    assert time.monotonic() - started < 10

    code = main(["chunks.jsonl", "-o", str(tmp_path / "out"), "--ray-address", f"127.0.0.1:{port}"])

    assert code == 1 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["chunks.jsonl", "-o", str(tmp_path / "out"), "--ray-address", "host:port"]) == 2


def test_the_actor_pool_always_fits_the_cluster() -> None:
    assert size_actor_pool(2, None, 1) == (2, 1.0)
    assert size_actor_pool(16 * 8, None, 2) == (64, 2.0)
    assert size_actor_pool(2, 4, 1) == (4, 0.5)
    assert size_actor_pool(1.5, None, 1) == (1, 1.0)
    with pytest.raises(ConfigurationError, match="no CPUs"):
        size_actor_pool(0, None, 1)


def test_an_output_directory_belongs_to_one_job(tmp_path: Path) -> None:
    OutputDir(tmp_path / "out", "parquet").claim({"space": "a", "shard_rows": 10})
    OutputDir(tmp_path / "out", "parquet").claim({"space": "a", "shard_rows": 10})  # a rerun of the same job
    with pytest.raises(ConfigurationError, match=r"another job.*shard_rows"):
        OutputDir(tmp_path / "out", "parquet").claim({"space": "a", "shard_rows": 20})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="not empty"):
        OutputDir(tmp_path / "other", "jsonl").claim({"space": "a"})
    with pytest.raises(ConfigurationError, match="unknown shard format"):
        OutputDir(tmp_path / "x", "csv")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"id": [1, 2], "text": ["def f(): pass", "   "]}, r"row 11 \(id 2\) is empty or missing"),
        ({"id": [1, None], "text": ["a = 1", "b = 2"]}, r"row 11 \(id None\) has no id"),
        ({"id": [1], "text": ["x" * 100_001]}, r"row 10 \(id 1\) is over 100,000 characters"),
        ({"id": [1]}, "no text column"),
        ({"id": [1], "text": [3]}, '"text" must be a string column'),
    ],
)
def test_bad_rows_are_named_before_anything_is_embedded(rows: dict[str, list[object]], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_texts(pa.table(rows), 10, Settings().limits)


@pytest.mark.slow
def test_a_pool_the_cluster_cannot_hold_fails_after_the_start_timeout(
    cluster: str, tmp_path: Path, data_dir: Path
) -> None:
    source = write_jsonl(tmp_path / "chunks.jsonl", TEXTS[:4])
    options = RayJobOptions(inputs=(str(source),), output=tmp_path / "out", gpus_per_actor=1, actor_start_timeout_s=3)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match=r"did not start 2 actor\(s\) of 1 CPU and 1 GPU within 3 s"):
        run_ray_job(options, Settings(data_dir=data_dir))
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_a_cancelled_job_keeps_its_completed_shards_for_the_rerun(cluster: str, tmp_path: Path, data_dir: Path) -> None:
    source = write_jsonl(tmp_path / "chunks.jsonl", TEXTS[:16])
    options = RayJobOptions(inputs=(str(source),), output=tmp_path / "out", shard_rows=4, batch_rows=4)
    cancel = threading.Event()

    def cancel_after_a_shard(done: int, total: int) -> None:
        if done >= 4:
            cancel.set()

    with pytest.raises(JobCancelled, match="cancelled"):
        run_ray_job(options, Settings(data_dir=data_dir), progress=cancel_after_a_shard, cancel=cancel)
    completed = len(list((tmp_path / "out").glob("shard-*")))
    assert 1 <= completed < 4 and not (tmp_path / "out" / "manifest.json").exists()

    report = run_ray_job(options, Settings(data_dir=data_dir))

    assert report.resumed == 4 * completed
    assert report.resumed + report.cached + report.embedded == 16
    assert (tmp_path / "out" / "manifest.json").is_file()
