"""Batch API failures are failures: a job with rows left without a vector is not `done`, and the CLI exits 1.

Issue 24, medium 6: after cancel_job, resume_job answered "done, 0/6 chunks", resubmitted nothing
and wrote an empty output; a batch failing validation ended as a job `done, 0/5`; the CLI exited
0 with "wrote 0 vectors ... failed 5", also when rows were missing or the batch expired.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from providers import Settings
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from tests.loopback_openai import LoopbackOpenAI
from tests.test_job_engine_batch import (  # noqa: F401 - fixtures
    FAST,
    assert_vectors,
    embed,
    fast_polls,
    openai,
    server,
    texts_of,
    write_chunks,
)

WAIT = 30


@pytest.mark.anyio
async def test_resuming_a_cancelled_batch_job_submits_its_texts_again_and_ends_done(
    openai: Settings,  # noqa: F811
    server: LoopbackOpenAI,  # noqa: F811
    tmp_path: Path,
    fast_polls: None,  # noqa: F811
) -> None:
    texts = texts_of(6)
    source = write_chunks(tmp_path / "chunks.jsonl", texts)
    server.time_scale = 1.0  # the batch stays in progress until it is cancelled...
    server.batches.cancelling_s = 0.0  # ...at once, before any of its requests ran
    async with JobRunner(openai, AllowedRoots((tmp_path,))) as runner:
        job = (await runner.start(str(source), str(tmp_path / "out.jsonl"), engine="batch-api")).job
        with anyio.fail_after(WAIT):
            while not ((status := runner.engine_status(runner.status(job.id))) and status["batches"]):
                await anyio.sleep(0.02)
            while status["batches"][0]["batch_id"] is None:
                await anyio.sleep(0.02)
                status = runner.engine_status(runner.status(job.id)) or status
            cancelled = await runner.cancel(job.id)
            cancelled = await runner.wait(job.id)
        assert cancelled.status == "cancelled"

        server.time_scale = FAST
        await runner.resume(job.id)
        with anyio.fail_after(WAIT):
            done = await runner.wait(job.id)
    assert done.status == "done" and done.done == 6, done  # was "done, 0/6" with an empty output
    assert server.batches.batches_created == 2  # submitted again after the cancel
    assert_vectors(tmp_path / "out.jsonl", texts)


@pytest.mark.anyio
async def test_a_batch_job_whose_batch_fails_validation_ends_failed_saying_why(
    openai: Settings,  # noqa: F811
    server: LoopbackOpenAI,  # noqa: F811
    tmp_path: Path,
    fast_polls: None,  # noqa: F811
) -> None:
    server.batches.inject("reject")
    source = write_chunks(tmp_path / "chunks.jsonl", texts_of(5))
    async with JobRunner(openai, AllowedRoots((tmp_path,))) as runner:
        job = (await runner.start(str(source), str(tmp_path / "out.jsonl"), engine="batch-api")).job
        with anyio.fail_after(WAIT):
            ended = await runner.wait(job.id)
    assert ended.status == "failed", ended  # was "done, 0/5"
    assert ended.last_error is not None and "the batch failed validation" in ended.last_error
    assert "injected: the file was rejected" in ended.last_error
    assert not (tmp_path / "out.jsonl").exists()


def test_the_cli_exits_1_when_a_batch_expires_for_good(
    openai: Settings,  # noqa: F811
    server: LoopbackOpenAI,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.batches.inject("expire", times=3)  # every try expires before any request ran
    source = write_chunks(tmp_path / "chunks.jsonl", texts_of(6))
    argv = [str(source), "-o", str(tmp_path / "out.jsonl"), "--engine", "batch-api", "--poll-interval", "0.05"]

    assert embed(openai, *argv) == 1  # was 0
    err = capsys.readouterr().err
    assert "6 of 6 chunks got no vector" in err and "batch_expired" in err and "after 3 tries" in err
    assert "failed 6" in err and "wrote" not in err
    assert server.batches.batches_created == 3
