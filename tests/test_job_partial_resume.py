"""A stopped job keeps its `.partial`, and its resume goes on after the whole rows there (issue 25).

With the cache off, nothing but the `.partial` remembers what a stopped run did: a resume that
sends only the chunks after its rows, and writes the output an uninterrupted run writes, shows it
went on from there. The runner embeds through a real `EmbeddingService` (cache off, ledger) over the
gated fake provider of tests/test_jobs.py: its first window of 256 chunks goes through, then the job
is stopped by `checkpoint_all`, as a server's clean exit stops it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import anyio
import pytest

from providers import EmbeddingService, ProviderError, Settings
from providers.jobs.engine import InProcessEngine
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from providers.jobs.store import JobRecord
from tests.test_jobs import GatedProvider, write_chunks

pytestmark = pytest.mark.anyio

CHUNKS, FIRST_WINDOW = 300, 256


@pytest.fixture
def uncached(settings: Settings) -> Settings:
    return dataclasses.replace(settings, cache=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_chunks(tmp_path / "in.jsonl", CHUNKS)


def runner_over(settings: Settings, fake: GatedProvider, tmp_path: Path) -> JobRunner:
    service = EmbeddingService("fake", settings=settings, factories={"fake": lambda *_: fake})
    return JobRunner(settings, AllowedRoots((tmp_path,)), engine=InProcessEngine(service), resume_free=False)


async def stopped_after_one_window(
    settings: Settings, tmp_path: Path, source: Path, output: str, prefix: str = "chunk"
) -> JobRecord:
    fake = GatedProvider("fake")
    fake.free_first_text = f"{prefix} number 0"  # the first window goes through, the next waits
    async with runner_over(settings, fake, tmp_path) as runner:
        started = await runner.start(str(source), output)
        with anyio.fail_after(10):
            while runner.status(started.job.id).done < FIRST_WINDOW:
                await anyio.sleep(0.01)
        await runner.checkpoint_all()
        return runner.status(started.job.id)


async def resumed(settings: Settings, tmp_path: Path, job_id: str) -> tuple[JobRecord, list[str]]:
    """The job once resumed to its end, and the texts it sent."""
    fake = GatedProvider("fake")
    fake.gate.set()
    async with runner_over(settings, fake, tmp_path) as runner:
        await runner.resume(job_id)
        with anyio.fail_after(10):
            return await runner.wait(job_id), fake.sent


async def uninterrupted(settings: Settings, tmp_path: Path, source: Path, output: str) -> None:
    fake = GatedProvider("fake")
    fake.gate.set()
    async with runner_over(settings, fake, tmp_path) as runner:
        started = await runner.start(str(source), output)
        with anyio.fail_after(10):
            assert (await runner.wait(started.job.id)).status == "done"


def texts(first: int, end: int = CHUNKS) -> list[str]:
    return [f"chunk number {i}" for i in range(first, end)]


def partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def cut_in_the_middle_of_line(path: Path, number: int) -> None:
    """Leave `number - 1` whole lines and half of the next, as a kill -9 during a write can."""
    data = path.read_bytes()
    start = sum(len(line) for line in data.splitlines(keepends=True)[: number - 1])
    path.write_bytes(data[: start + 40])


async def test_a_stopped_jsonl_job_keeps_its_rows_and_its_resume_embeds_only_the_rest(
    uncached: Settings, tmp_path: Path, source: Path
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.jsonl")
    assert (stopped.status, stopped.done) == ("interrupted", FIRST_WINDOW)
    kept = partial(tmp_path / "out.jsonl").read_bytes().splitlines()
    assert len(kept) == FIRST_WINDOW and all(line.endswith(b"}") for line in kept)

    job, sent = await resumed(uncached, tmp_path, stopped.id)

    assert sent == texts(FIRST_WINDOW)  # the cache is off: only the .partial said what was done
    assert (job.status, job.done, job.total, job.cached) == ("done", CHUNKS, CHUNKS, FIRST_WINDOW)
    assert job.tokens == 3 * CHUNKS  # each chunk paid once, over the two runs
    await uninterrupted(uncached, tmp_path, source, "reference.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


async def test_a_stopped_npy_job_keeps_its_vectors_and_ids_and_its_resume_embeds_only_the_rest(
    uncached: Settings, tmp_path: Path, source: Path
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.npy")
    assert len(partial(tmp_path / "out.ids.jsonl").read_bytes().splitlines()) == FIRST_WINDOW
    assert partial(tmp_path / "out.npy").exists()

    job, sent = await resumed(uncached, tmp_path, stopped.id)

    assert sent == texts(FIRST_WINDOW)
    assert (job.status, job.done, job.cached) == ("done", CHUNKS, FIRST_WINDOW)
    await uninterrupted(uncached, tmp_path, source, "reference.npy")
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()
    assert (tmp_path / "out.ids.jsonl").read_bytes() == (tmp_path / "reference.ids.jsonl").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


async def test_a_partial_torn_by_a_kill_is_cut_back_to_its_last_whole_row_and_continued(
    uncached: Settings, tmp_path: Path, source: Path
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.jsonl")
    cut_in_the_middle_of_line(partial(tmp_path / "out.jsonl"), 201)

    job, sent = await resumed(uncached, tmp_path, stopped.id)

    assert sent == texts(200)
    assert (job.status, job.done, job.cached) == ("done", CHUNKS, 200)
    await uninterrupted(uncached, tmp_path, source, "reference.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()


async def test_a_npy_partial_keeps_only_the_rows_that_have_both_their_vector_and_their_id(
    uncached: Settings, tmp_path: Path, source: Path
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.npy")
    vectors = partial(tmp_path / "out.npy")
    vectors.write_bytes(vectors.read_bytes()[:-20])  # the last vector is torn: 255 whole ones, 256 ids
    cut_in_the_middle_of_line(partial(tmp_path / "out.ids.jsonl"), 256)  # and the 256th id too

    job, sent = await resumed(uncached, tmp_path, stopped.id)

    assert sent == texts(255)
    await uninterrupted(uncached, tmp_path, source, "reference.npy")
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()
    assert (tmp_path / "out.ids.jsonl").read_bytes() == (tmp_path / "reference.ids.jsonl").read_bytes()
    assert job.done == CHUNKS


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (lambda lines: [lines[1], lines[0], *lines[2:]], "not the first rows the input gives now"),
        (lambda lines: [line.replace(b'"space":"', b'"space":"another ') for line in lines], "of the space"),
        (lambda lines: [*lines, *lines[:100]], "more of them than the input gives"),
    ],
    ids=["ids in another order", "another space", "more rows than chunks"],
)
async def test_a_partial_whose_rows_are_not_the_jobs_first_rows_now_is_started_over(
    uncached: Settings, tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture, spoil: object, said: str
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.jsonl")
    kept = partial(tmp_path / "out.jsonl")
    kept.write_bytes(b"".join(spoil(kept.read_bytes().splitlines(keepends=True))))  # type: ignore[operator]

    with caplog.at_level(logging.WARNING, logger="providers.jobs.runner"):
        job, sent = await resumed(uncached, tmp_path, stopped.id)

    assert sorted(sent) == sorted(texts(0))  # windows in flight together reach the provider in any order
    assert (job.status, job.done, job.cached) == ("done", CHUNKS, 0)
    assert any("starts over" in record.message and said in record.message for record in caplog.records)
    await uninterrupted(uncached, tmp_path, source, "reference.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()


@pytest.mark.parametrize("end", ["cancelled", "failed"])
async def test_a_resume_that_is_cancelled_or_fails_removes_the_partial_its_stop_kept(
    uncached: Settings, tmp_path: Path, source: Path, end: str
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.npy")
    assert partial(tmp_path / "out.npy").exists() and partial(tmp_path / "out.ids.jsonl").exists()
    fake = GatedProvider("fake")
    if end == "failed":
        fake.fail_with = ProviderError("the provider is down")
        fake.gate.set()
    async with runner_over(uncached, fake, tmp_path) as runner:
        await runner.resume(stopped.id)
        with anyio.fail_after(10):
            await fake.entered.wait()
            if end == "cancelled":
                await runner.cancel(stopped.id)
            job = await runner.wait(stopped.id)
    assert job.status == end
    assert not list(tmp_path.glob("*.partial"))


async def test_a_partial_another_job_wrote_since_is_not_continued_even_when_its_ids_match(
    uncached: Settings, tmp_path: Path, source: Path
) -> None:
    stopped = await stopped_after_one_window(uncached, tmp_path, source, "out.jsonl")
    other = write_chunks(tmp_path / "other.jsonl", CHUNKS, prefix="other")  # the same ids, other texts
    await stopped_after_one_window(uncached, tmp_path, other, "out.jsonl", "other")  # its rows fill the .partial
    assert len(partial(tmp_path / "out.jsonl").read_bytes().splitlines()) == FIRST_WINDOW

    job, sent = await resumed(uncached, tmp_path, stopped.id)

    assert sorted(sent) == sorted(texts(0)) and job.cached == 0
    await uninterrupted(uncached, tmp_path, source, "reference.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
