"""The local provider with the real packaged all-MiniLM-L6-v2 model, in its default configuration.

Every test shares one data directory, so the int8 ONNX model is exported once per test session.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import anyio
import numpy as np
import pytest

from providers import ConfigurationError, Settings
from providers.local import PACKAGED_MODEL_SHA256, LocalProvider, packaged_model_path

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def provider(shared_data_dir: Path) -> LocalProvider:
    return LocalProvider.from_settings(Settings(data_dir=shared_data_dir))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_vectors_are_384_normalised_float32_in_input_order(provider: LocalProvider) -> None:
    texts = ["def calculate_total(items):", "SELECT * FROM users", "import numpy as np"]
    result = await provider.embed(texts)
    assert result.vectors.shape == (3, 384)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert (result.provider, result.model, result.dimensions) == ("local", "all-MiniLM-L6-v2", 384)
    single = await provider.embed([texts[1]])
    np.testing.assert_allclose(single.vectors[0], result.vectors[1], atol=1e-5)


async def test_similar_code_is_closer_than_unrelated_text(provider: LocalProvider) -> None:
    total, summed, poem = (
        await provider.embed(
            [
                "def calculate_total(items):\n    return sum(item.price for item in items)",
                "def compute_sum(products):\n    total = 0\n    for p in products:\n"
                "        total += p.price\n    return total",
                "The autumn leaves drift slowly over the quiet river at dusk.",
            ]
        )
    ).vectors
    assert cosine(total, summed) > cosine(total, poem) + 0.2


async def test_tokens_are_counted_and_truncation_is_reported(provider: LocalProvider) -> None:
    long_text = "word " * 400
    result = await provider.embed(["short text", long_text])
    assert set(result.truncated) == {1}
    assert result.truncated[1] == 402 - 256  # 400 words + [CLS] + [SEP], window of 256
    assert result.tokens == 4 + 256


async def test_progress_is_reported_in_steps_up_to_the_total(provider: LocalProvider) -> None:
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    await provider.embed([f"chunk number {i}" for i in range(70)], progress=progress)
    assert seen == [*((done, 70) for done in range(8, 70, 8)), (70, 70)]  # steps of 8 windows


async def test_a_short_call_is_answered_while_a_long_one_holds_a_lane(shared_data_dir: Path) -> None:
    provider = LocalProvider(threads=2, data_dir=shared_data_dir)
    long_texts = [f"def long_call_{i}(rows): return [row * {i} for row in rows]" for i in range(40)]
    query = "where is the total computed"
    expected_long = (await provider.embed(long_texts)).vectors  # loads the model; uninterrupted runs
    expected_short = (await provider.embed([query])).vectors
    loaded = provider._loaded
    assert loaded is not None and loaded.runtime.lanes == 2
    encode, calls = loaded.lanes._encode, provider.model_calls
    paused, resume = threading.Event(), threading.Event()

    def gated(windows: list[list[int]]) -> np.ndarray:
        if provider.model_calls == calls + 1 and not paused.is_set():  # the long call's 2nd model call
            paused.set()
            assert resume.wait(30)
        return encode(windows)

    loaded.lanes._encode = gated
    results: dict[str, np.ndarray] = {}

    async def run(name: str, texts: list[str]) -> None:
        results[name] = (await provider.embed(texts)).vectors

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run, "long", long_texts)
                assert await anyio.to_thread.run_sync(paused.wait, 30)
                await run("short", [query])  # answered by the other lane while the gate stays shut
                assert not resume.is_set() and "long" not in results
                resume.set()
    finally:
        resume.set()
    np.testing.assert_allclose(results["short"], expected_short, atol=1e-6)
    np.testing.assert_allclose(results["long"], expected_long, atol=1e-6)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_batches_run_at_idle_priority_unless_told_otherwise(
    provider: LocalProvider, shared_data_dir: Path
) -> None:
    texts = [f"def chunk_{i}(): return {i}" for i in range(12)]
    background = await provider.embed(texts)
    normal = LocalProvider(batch_priority="normal", data_dir=shared_data_dir)
    try:
        at_normal = await normal.embed(texts)
        assert provider._loaded is not None and provider._loaded.lanes.background
        assert normal._loaded is not None and not normal._loaded.lanes.background
    finally:
        await normal.aclose()
    np.testing.assert_allclose(background.vectors, at_normal.vectors, atol=1e-6)
    with pytest.raises(ConfigurationError, match="one of: idle, normal"):
        LocalProvider(batch_priority="low")  # type: ignore[arg-type]


async def test_concurrent_calls_each_get_their_own_vectors(provider: LocalProvider) -> None:
    texts = {name: [f"{name} {i}" for i in range(10)] for name in ("alpha", "beta", "gamma")}
    results = {}

    async def run(name: str) -> None:
        results[name] = await provider.embed(texts[name])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for name in texts:
                tg.start_soon(run, name)
    alone = await provider.embed(texts["beta"])
    np.testing.assert_allclose(results["beta"].vectors, alone.vectors, atol=1e-5)


def test_the_packaged_weights_are_the_reviewed_revision() -> None:
    import hashlib

    digest = hashlib.sha256((packaged_model_path() / "model.safetensors").read_bytes()).hexdigest()
    assert digest == PACKAGED_MODEL_SHA256


async def test_weights_with_another_checksum_are_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "tampered"
    shutil.copytree(packaged_model_path(), model_dir, ignore=shutil.ignore_patterns("model.safetensors"))
    (model_dir / "model.safetensors").write_bytes(b"not the reviewed weights")
    provider = LocalProvider("tampered", path=model_dir, expected_sha256=PACKAGED_MODEL_SHA256)
    with pytest.raises(ConfigurationError, match="expected 53aa5117"):
        await provider.embed(["x"])


async def test_a_configured_model_is_loaded_by_name(tmp_path: Path, shared_data_dir: Path) -> None:
    copy = tmp_path / "mini-copy"
    copy.symlink_to(packaged_model_path(), target_is_directory=True)
    settings = Settings(local_models={"mini-copy": copy}, data_dir=shared_data_dir)
    provider = LocalProvider.from_settings(settings, "mini-copy")
    result = await provider.embed(["hello"])
    assert (result.model, result.dimensions) == ("mini-copy", 384)


@pytest.mark.parametrize("name", ["/etc/passwd", "https://huggingface.co/evil/model", "no such model"])
def test_paths_urls_and_unknown_names_are_not_model_names(settings: Settings, name: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown local model"):
        LocalProvider.from_settings(settings, name)


async def test_a_directory_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    provider = LocalProvider("empty", path=tmp_path)
    with pytest.raises(ConfigurationError, match="no sentence-transformers model"):
        await provider.embed(["x"])
    with pytest.raises(ConfigurationError, match="cannot read the vector size"):
        _ = provider.dimensions
