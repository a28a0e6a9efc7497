"""The local backends against fp32 torch, the ONNX export cache, and the runtime settings."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from benchmarks.corpus import code_chunks, one_line_snippets
from providers import ConfigurationError, ProviderError
from providers.local import DEFAULT_BATCH_SIZES, PACKAGED_MODEL_SHA256, LocalProvider, packaged_model_path
from providers.local_model.encoders import (
    ONNX_SPIN_US,
    OnnxEncoder,
    pad_batch,
    resolve_backend,
    resolve_device,
    usable_cores,
)
from providers.local_model.onnx_export import RECIPE_VERSION, cached_onnx_model

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# Code chunks from several stdlib files (long ones are truncated) and one-liners: a small corpus.
CORPUS = code_chunks(400)[::10] + one_line_snippets(200)[::10]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    """The reference: plain sentence-transformers in fp32."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_model_path()), device="cpu", local_files_only=True)
    return np.asarray(model.encode(CORPUS, batch_size=8, normalize_embeddings=True, convert_to_numpy=True))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


async def test_int8_onnx_agrees_with_fp32_torch(shared_data_dir: Path, torch_vectors: np.ndarray) -> None:
    provider = LocalProvider(backend="onnx-int8", data_dir=shared_data_dir)
    agreement = cosines((await provider.embed(CORPUS)).vectors, torch_vectors)
    assert agreement.mean() >= 0.99
    assert agreement.min() >= 0.97


async def test_torch_backend_matches_sentence_transformers_encode(torch_vectors: np.ndarray) -> None:
    provider = LocalProvider(backend="torch", device="cpu")
    assert cosines((await provider.embed(CORPUS)).vectors, torch_vectors).min() > 0.9999


async def test_fp32_onnx_matches_fp32_torch(shared_data_dir: Path, torch_vectors: np.ndarray) -> None:
    provider = LocalProvider(backend="onnx", batch_size=8, data_dir=shared_data_dir)
    assert cosines((await provider.embed(CORPUS)).vectors, torch_vectors).min() > 0.9999


async def test_the_default_on_a_cpu_is_int8_onnx_one_window_per_call_on_every_core(shared_data_dir: Path) -> None:
    provider = LocalProvider(data_dir=shared_data_dir, device="cpu")
    assert provider.runtime is None  # nothing loads before the first call
    await provider.embed(["a", "b", "c"])
    assert provider.runtime is not None
    assert (provider.runtime.backend, provider.runtime.device) == ("onnx-int8", "cpu")
    assert provider.runtime.threads == usable_cores()
    assert provider.runtime.batch_size == DEFAULT_BATCH_SIZES["onnx-int8"] == 1
    assert provider.model_calls == 3  # one call per text


async def test_threads_and_batch_size_are_honoured(shared_data_dir: Path) -> None:
    provider = LocalProvider(backend="onnx-int8", threads=1, batch_size=4, data_dir=shared_data_dir)
    await provider.embed([f"def f{i}(x): return x + {i}" for i in range(10)])
    assert provider.runtime is not None
    assert (provider.runtime.threads, provider.runtime.batch_size) == (1, 4)
    assert provider.model_calls == 3  # 10 windows in calls of 4, 4 and 2


async def test_a_second_load_reuses_the_export(shared_data_dir: Path) -> None:
    await LocalProvider(data_dir=shared_data_dir).embed(["warm the cache"])
    source = packaged_model_path()
    cached = cached_onnx_model(source, PACKAGED_MODEL_SHA256, shared_data_dir / "onnx", quantized=True)
    assert not cached.exported
    assert cached.manifest["source_sha256"] == PACKAGED_MODEL_SHA256
    assert cached.manifest["recipe"] == RECIPE_VERSION


async def test_idle_onnx_threads_spin_for_a_millisecond_not_onnx_runtimes_default(shared_data_dir: Path) -> None:
    # By default they spin a whole core for 20-50 ms after every call (python -m benchmarks.idle_cpu).
    await LocalProvider(data_dir=shared_data_dir).embed(["warm the cache"])
    cached = cached_onnx_model(packaged_model_path(), PACKAGED_MODEL_SHA256, shared_data_dir / "onnx", quantized=True)
    ours = OnnxEncoder(cached.model_bytes, threads=1, device="cpu")
    stock = OnnxEncoder(cached.model_bytes, threads=1, device="cpu", spin_us=None)
    assert (ours.spin_us, stock.spin_us) == (ONNX_SPIN_US, None)
    assert ONNX_SPIN_US == 1000
    window = pad_batch([[101, 2023, 102]])
    assert np.array_equal(ours.encode(*window), stock.encode(*window))


async def test_a_corrupted_export_is_detected_and_exported_again(shared_data_dir: Path, tmp_path: Path) -> None:
    reference = LocalProvider(data_dir=shared_data_dir)
    expected = (await reference.embed(CORPUS[:4])).vectors
    shutil.copytree(shared_data_dir / "onnx", tmp_path / "onnx")
    (entry,) = [path for path in (tmp_path / "onnx").glob("int8-*") if path.is_dir()]
    model_file = entry / "model.onnx"
    damaged = bytearray(model_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte in the weights still parses: only the hash tells
    model_file.write_bytes(bytes(damaged))

    cached = cached_onnx_model(packaged_model_path(), PACKAGED_MODEL_SHA256, tmp_path / "onnx", quantized=True)
    assert cached.exported
    assert bytes(damaged) != cached.model_bytes == model_file.read_bytes()
    again = LocalProvider(data_dir=tmp_path)
    np.testing.assert_allclose((await again.embed(CORPUS[:4])).vectors, expected, atol=1e-6)


def test_a_failed_export_in_the_child_process_names_the_cause(tmp_path: Path) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    with pytest.raises(ProviderError, match=r"exporting .*not-a-model to ONNX failed \(exit 1\): \w+"):
        cached_onnx_model(not_a_model, "ab" * 32, tmp_path / "cache", quantized=True)


def write_fake_export(source: Path, destination: Path, quantized: bool) -> None:
    (destination / "model.onnx").write_bytes(b"model " + source.name.encode())
    (destination / "tokenizer.json").write_text("{}")


def test_two_loaders_at_once_export_once(tmp_path: Path) -> None:
    exports: list[Path] = []
    started = threading.Barrier(2)

    def counting_export(source: Path, destination: Path, quantized: bool) -> None:
        exports.append(destination)
        write_fake_export(source, destination, quantized)

    results = []

    def load() -> None:
        started.wait()
        results.append(
            cached_onnx_model(tmp_path, "ab" * 32, tmp_path / "cache", quantized=True, exporter=counting_export)
        )

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(exports) == 1
    assert sorted(r.exported for r in results) == [False, True]
    assert results[0].model_bytes == results[1].model_bytes
    # Nothing half-written is left beside the entry.
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [
        f"int8-r{RECIPE_VERSION}-{'ab' * 8}"
    ]


def test_an_export_for_other_weights_or_a_tampered_manifest_is_not_used(tmp_path: Path) -> None:
    first = cached_onnx_model(tmp_path, "ab" * 32, tmp_path / "cache", quantized=True, exporter=write_fake_export)
    manifest_file = first.directory / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["model_sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    again = cached_onnx_model(tmp_path, "ab" * 32, tmp_path / "cache", quantized=True, exporter=write_fake_export)
    assert again.exported
    other = cached_onnx_model(tmp_path, "cd" * 32, tmp_path / "cache", quantized=True, exporter=write_fake_export)
    assert other.exported and other.directory != again.directory


def test_a_failed_export_leaves_no_entry(tmp_path: Path) -> None:
    def failing_export(source: Path, destination: Path, quantized: bool) -> None:
        (destination / "model.onnx").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cached_onnx_model(tmp_path, "ab" * 32, tmp_path / "cache", quantized=True, exporter=failing_export)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_auto_uses_int8_onnx_on_a_cpu_and_torch_on_a_gpu() -> None:
    assert resolve_backend("auto", "cpu") == "onnx-int8"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("onnx", "cpu") == "onnx"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device(None) in {"cpu", "cuda"}
    with pytest.raises(ConfigurationError, match="unknown local backend"):
        resolve_backend("openvino", "cpu")


async def test_onnx_on_a_device_onnxruntime_cannot_use_is_a_clear_error(shared_data_dir: Path) -> None:
    provider = LocalProvider(backend="onnx-int8", device="mps", data_dir=shared_data_dir)
    with pytest.raises(ConfigurationError, match="use backend 'torch' for GPUs"):
        await provider.embed(["x"])


@pytest.mark.parametrize(
    "bad", [{"long_texts": "ignore"}, {"batch_size": 0}, {"threads": 0}, {"backend": "tpu"}, {"split_overlap": -1}]
)
def test_bad_local_options_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LocalProvider(**bad)  # type: ignore[arg-type]


async def test_an_overlap_as_long_as_the_window_is_refused_on_load(shared_data_dir: Path) -> None:
    provider = LocalProvider(long_texts="split", split_overlap=300, data_dir=shared_data_dir)
    with pytest.raises(ConfigurationError, match="smaller than the model's window of 256"):
        await provider.embed(["x"])
