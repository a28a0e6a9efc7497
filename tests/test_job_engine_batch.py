"""The Batch API engine in the job runner and the CLI, against the loopback Files and Batches APIs.

The loopback runs batch time 36,000x faster (a batch's 37 virtual minutes pass in 0.06 s) and the
engine polls every 0.05 s, so nothing really waits a batch out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client

from providers import Settings
from providers.batch_api import BatchJobStatus, BatchProgress
from providers.batch_api.job_engine import BatchJobEngine, batch_summary
from providers.jobs import engine as job_engine_module
from providers.text.tokens import load_cl100k
from server import build_server
from server.commands.embed import add_commands, run_embed
from tests.loopback_openai import LoopbackOpenAI, embedding_for

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-batch"
MODEL = "text-embedding-3-small"
SPACE = f"openai:{MODEL}:1536:l2"
FAST = 36_000.0


def texts_of(n: int) -> list[str]:
    return [f"def function_{i}(value):\n    return value * {i}" for i in range(n)]


def write_chunks(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def read_output(path: Path) -> dict[str, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {row["space"] for row in rows} == {SPACE}
    return {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in rows}


def assert_vectors(output: Path, texts: list[str]) -> None:
    vectors = read_output(output)
    assert list(vectors) == [f"c{i}" for i in range(len(texts))]  # input order
    for i, text in enumerate(texts):
        assert np.allclose(vectors[f"c{i}"], embedding_for(text, MODEL, 1536), atol=1e-6)


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY, time_scale=FAST) as running:
        yield running


@pytest.fixture
def openai(server: LoopbackOpenAI, settings: Settings) -> Settings:
    return replace(settings, provider="openai", openai_base_url=server.base_url, openai_api_key=KEY)


def embed(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return run_embed(parser.parse_args(["embed", *argv]), settings)


def test_cli_batch_api_embeds_in_input_order_and_a_rerun_sends_nothing(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = texts_of(30)
    source = write_chunks(tmp_path / "chunks.jsonl", texts)
    argv = [str(source), "-o", str(tmp_path / "out.jsonl"), "--engine", "batch-api", "--poll-interval", "0.05"]

    assert embed(openai, *argv) == 0
    assert_vectors(tmp_path / "out.jsonl", texts)
    assert server.batches.batches_created == 1
    err = capsys.readouterr().err
    # The tokens the answers reported (the loopback counts 15 a text; we planned 12), at the batch price.
    assert "embedded 30, cached 0, failed 0; 450 tokens, $0.000005" in err

    assert embed(openai, *argv, "--overwrite") == 0  # the cache answers: no new batch
    assert server.batches.batches_created == 1
    assert "embedded 0, cached 30" in capsys.readouterr().err
    assert_vectors(tmp_path / "out.jsonl", texts)


def test_cli_batch_api_fails_with_exit_1_when_a_batch_fails_validation_and_the_rerun_resubmits(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.batches.inject("reject")
    texts = texts_of(5)
    source = write_chunks(tmp_path / "chunks.jsonl", texts)
    argv = [str(source), "-o", str(tmp_path / "out.jsonl"), "--engine", "batch-api", "--poll-interval", "0.05"]

    assert embed(openai, *argv) == 1  # was 0, with "wrote 0 vectors ... failed 5"
    err = capsys.readouterr().err
    assert "5 of 5 chunks got no vector" in err and "the batch failed validation" in err
    assert "embedded 0, cached 0, failed 5" in err and "wrote 0 vectors" not in err
    assert not (tmp_path / "out.jsonl").exists()

    assert embed(openai, *argv) == 0  # the same command again submits the failed requests anew
    assert server.batches.batches_created == 2
    assert_vectors(tmp_path / "out.jsonl", texts)


def test_cli_engine_options_are_checked(openai: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_chunks(tmp_path / "chunks.jsonl", texts_of(2))
    assert embed(openai, str(source), "-o", str(tmp_path / "o.jsonl"), "--actors", "2") == 2
    assert "--ray-address and --actors go with --engine ray" in capsys.readouterr().err
    argv = [str(source), "-o", str(tmp_path / "o.jsonl"), "--engine", "batch-api", "--provider", "local"]
    assert embed(openai, *argv) == 2
    assert "batch-api engine embeds with OpenAI only" in capsys.readouterr().err


def test_cli_batch_api_killed_and_run_again_reattaches_without_submitting_twice(tmp_path: Path, data_dir: Path) -> None:
    texts = texts_of(40)
    source = write_chunks(tmp_path / "chunks.jsonl", texts)
    output = tmp_path / "out.jsonl"
    # 36x: the batch runs ~60 s real, so the first run is surely killed while it waits for it.
    with LoopbackOpenAI(api_key=KEY, time_scale=36.0) as loopback:
        env = {
            **os.environ,
            "SIGNAL_HUB_DATA_DIR": str(data_dir),
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": loopback.base_url,
            "HF_HUB_OFFLINE": "1",
        }
        argv = [sys.executable, "-m", "server", "embed", str(source), "-o", str(output), "--engine", "batch-api"]
        first = subprocess.Popen([*argv, "--poll-interval", "0.2"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while loopback.batches.batches_created < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # its batch id is recorded
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert loopback.batches.batches_created == 1
        assert not output.exists()

        loopback.time_scale = FAST  # the rest of the batch passes at once
        rerun = subprocess.run(
            [*argv, "--poll-interval", "0.05", "--no-progress"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert loopback.batches.batches_created == 1  # re-attached: nothing submitted twice
        assert len(loopback.batches.created_inputs) == 1
    assert_vectors(output, texts)


def test_batch_summary_lists_few_batches_and_counts_many() -> None:
    batches = tuple(BatchProgress(f"b{i}", "completed" if i % 2 else "in_progress", 10, 5, 0) for i in range(50))
    status = BatchJobStatus("j", "running", 500, 250, 50, 25, {}, batches, 500)
    summary = batch_summary(status)
    assert len(summary["batches"]) == 8 and summary["more_batches"] == 42
    assert summary["batches_by_status"] == {"in_progress": 25, "completed": 25}


# --- the MCP tools -------------------------------------------------------------------------------------


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    build = job_engine_module.build_engine

    def quick(name: str, settings: Settings, providers: Any, **options: Any) -> Any:
        return build(name, settings, providers, **{**options, "poll_s": 0.05})

    monkeypatch.setattr("providers.jobs.runner_engines.build_engine", quick)


@pytest.fixture
async def client(openai: Settings, project: Path, fast_polls: None) -> AsyncIterator[Client]:
    async with Client(build_server(openai), read_timeout_seconds=60) as mcp:
        yield mcp


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    if (cl100k := load_cl100k()) is not None:  # within the 2,000-token answer budget
        assert len(cl100k.encode(json.dumps(result.structured_content))) <= 2_000
    return result.structured_content  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_a_batch_api_job_runs_to_done_with_its_batches_in_job_status(
    client: Client, project: Path, server: LoopbackOpenAI
) -> None:
    texts = texts_of(20)
    source = write_chunks(project / "chunks.jsonl", texts)
    started = await call(
        client, "start_embedding_job", input=str(source), output=str(project / "out.jsonl"), engine="batch-api"
    )
    assert started["engine"] == "batch-api"
    assert started["batch_usd"] == pytest.approx(started["sync_usd"] / 2, abs=1e-6)  # both rounded to 6 places
    assert started["estimated_usd"] == pytest.approx(started["batch_usd"], abs=1e-6)
    with anyio.fail_after(60):
        while (status := await call(client, "job_status", job_id=started["job_id"]))["status"] in ("queued", "running"):
            await anyio.sleep(0.05)
    assert status["status"] == "done" and status["done"] == 20, status
    assert status["batches"]["batches"][0]["status"] == "completed"
    assert status["batches"]["batches"][0]["completed"] == status["batches"]["batches"][0]["total"] > 0
    assert_vectors(project / "out.jsonl", texts)


@pytest.mark.anyio
async def test_cancel_job_cancels_the_remote_batches(client: Client, project: Path, server: LoopbackOpenAI) -> None:
    server.time_scale = 1.0  # the batch stays in progress
    source = write_chunks(project / "chunks.jsonl", texts_of(10))
    started = await call(
        client, "start_embedding_job", input=str(source), output=str(project / "out.jsonl"), engine="batch-api"
    )
    with anyio.fail_after(30):
        while (
            not ((status := await call(client, "job_status", job_id=started["job_id"]))["batches"] or {}).get("batches")
            or status["batches"]["batches"][0]["batch_id"] is None
        ):
            await anyio.sleep(0.05)
    batch_id = status["batches"]["batches"][0]["batch_id"]

    cancelled = await call(client, "cancel_job", job_id=started["job_id"])

    assert cancelled["status"] == "cancelled"
    assert server.batches.batch_status(batch_id) in ("cancelling", "cancelled")
    assert server.batches.batches_created == 1
    assert not (project / "out.jsonl").exists()


@pytest.mark.anyio
async def test_the_batch_api_engine_refuses_other_providers(openai: Settings) -> None:
    engine = BatchJobEngine(openai, lambda name: _NamedProvider(name or "openai"))
    with pytest.raises(Exception, match="OpenAI only"):
        engine.provider("local")
    await engine.aclose()


class _NamedProvider:
    def __init__(self, name: str) -> None:
        self.name = name


def test_the_batch_price_is_half_the_synchronous_one_and_openai_only() -> None:
    from providers.cost import batch_cost_usd, cost_usd

    settings = Settings()
    sync = cost_usd("openai", MODEL, 1_000_000, settings)
    assert sync is not None and batch_cost_usd("openai", MODEL, 1_000_000, settings) == pytest.approx(sync / 2)
    priced = replace(settings, prices={f"{MODEL}@batch": 0.004})
    assert batch_cost_usd("openai", MODEL, 1_000_000, priced) == pytest.approx(0.004)
    assert batch_cost_usd("local", "all-MiniLM-L6-v2", 1_000, settings) is None


def test_a_job_store_made_before_engines_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    from providers.jobs.store import JobStore

    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN engine")  # as a store of the release before
    db.commit()
    db.close()
    store = JobStore(path)
    values = dict(input="i", output="o", format="jsonl", glob="*", provider="local", model="m", space="s")
    job = store.create(**values, fingerprint="f", total=1)
    assert job.engine == "in-process"
    assert store.create(**values, fingerprint="f", total=1, engine="ray").engine == "ray"
    store.close()


@pytest.mark.anyio
async def test_a_batch_api_job_stopped_with_its_server_resumes_on_its_batches(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path, fast_polls: None
) -> None:
    from providers.jobs.paths import AllowedRoots
    from providers.jobs.runner import JobRunner

    texts = texts_of(12)
    source = write_chunks(tmp_path / "chunks.jsonl", texts)
    roots = AllowedRoots((tmp_path,))
    server.time_scale = 1.0  # the batch stays in progress while the first server runs
    async with JobRunner(openai, roots) as runner:
        job = (await runner.start(str(source), str(tmp_path / "out.jsonl"), engine="batch-api")).job
        with anyio.fail_after(30):
            while not ((status := runner.engine_status(runner.status(job.id))) and status["batches"]):
                await anyio.sleep(0.02)
            while status["batches"][0]["batch_id"] is None:
                await anyio.sleep(0.02)
                status = runner.engine_status(runner.status(job.id)) or status

    server.time_scale = FAST
    async with JobRunner(openai, roots) as runner:
        assert runner.status(job.id).status == "interrupted"  # the server went away: its batch did not
        await runner.resume(job.id)
        with anyio.fail_after(30):
            done = await runner.wait(job.id)
    assert done.status == "done" and done.done == 12, done
    assert server.batches.batches_created == 1  # re-attached to the same batch
    assert_vectors(tmp_path / "out.jsonl", texts)


def test_cli_batch_api_no_wait_submits_exits_75_and_the_same_command_collects(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = texts_of(6)
    source = write_chunks(tmp_path / "chunks.jsonl", texts)
    argv = [str(source), "-o", str(tmp_path / "out.jsonl"), "--engine", "batch-api", "--no-wait"]
    server.time_scale = 1.0  # the batch runs on

    assert embed(openai, *argv) == 75
    assert "1 batch(es) of 6 texts run at OpenAI" in capsys.readouterr().err
    assert server.batches.batches_created == 1 and not (tmp_path / "out.jsonl").exists()

    server.time_scale = FAST
    assert embed(openai, *argv) == 0
    assert server.batches.batches_created == 1
    assert_vectors(tmp_path / "out.jsonl", texts)
    assert embed(openai, str(source), "-o", str(tmp_path / "o.jsonl"), "--no-wait") == 2
