"""The job runner: each state transition, cancel, queues per provider, resume, the lease, output formats.

The runner embeds through a real `EmbeddingService` (cache, ledger) over deterministic fake
providers; a gate holds a provider mid-job so cancel and queueing can be watched without sleeps.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import numpy as np
import pytest

from providers import (
    EmbeddingResult,
    EmbeddingService,
    InputError,
    InputType,
    ProgressCallback,
    ProviderError,
    Settings,
)
from providers.jobs.engine import InProcessEngine
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from providers.jobs.store import JobStore
from tests.fakes import FakeProvider, fake_vector

pytestmark = pytest.mark.anyio


class GatedProvider(FakeProvider):
    """Embeds only while its gate is open; counts the texts it was sent."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.fail_with: Exception | None = None
        self.free_first_text: str | None = None
        """A call starting with this text passes without waiting for the gate."""

    @property
    def sent(self) -> list[str]:
        return [text for call in self.calls for text in call]

    async def embed(
        self, texts: Sequence[str], *, input_type: InputType = "document", progress: ProgressCallback | None = None
    ) -> EmbeddingResult:
        self.entered.set()
        if texts[0] != self.free_first_text:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return await super().embed(texts, progress=progress)


@pytest.fixture
def providers() -> dict[str, GatedProvider]:
    return {"fake": GatedProvider("fake"), "other": GatedProvider("other")}


@pytest.fixture
def service(settings: Settings, providers: dict[str, GatedProvider]) -> EmbeddingService:
    factories = {name: (lambda p: lambda *_: p)(provider) for name, provider in providers.items()}
    return EmbeddingService("fake", settings=settings, factories=factories)


@pytest.fixture
async def runner(settings: Settings, service: EmbeddingService, tmp_path: Path) -> AsyncIterator[JobRunner]:
    async with JobRunner(settings, AllowedRoots((tmp_path,)), engine=InProcessEngine(service)) as runner:
        yield runner


def write_chunks(path: Path, count: int, prefix: str = "chunk") -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": f"{prefix} number {i}"}) + "\n" for i in range(count)))
    return path


def jsonl_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_job_goes_from_queued_to_running_to_done_and_writes_every_vector_in_order(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    source = write_chunks(tmp_path / "in.jsonl", 40)
    started = await runner.start(str(source), "out.jsonl", provider="fake")
    assert started.job.status == "queued" and started.job.total == 40 and started.job.estimated_tokens > 0
    with anyio.fail_after(10):
        await providers["fake"].entered.wait()
    assert runner.status(started.job.id).status == "running"
    providers["fake"].gate.set()
    with anyio.fail_after(10):
        job = await runner.wait(started.job.id)
    assert (job.status, job.done, job.total, job.cached, job.errors) == ("done", 40, 40, 0, "[]")
    assert job.tokens == 3 * 40
    rows = jsonl_rows(tmp_path / "out.jsonl")
    assert [row["id"] for row in rows] == list(range(40))
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(np.float32(row["embedding"]), fake_vector(f"chunk number {i}", 8))
        assert row["truncated"] is False and row["dropped_tokens"] == 0
    assert not list(tmp_path.glob("*.partial"))


async def test_npy_output_has_one_row_per_chunk_and_the_ids_beside_it(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    providers["fake"].gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 5)
    started = await runner.start(str(source), str(tmp_path / "vectors.npy"))
    assert started.job.format == "npy"
    with anyio.fail_after(10):
        assert (await runner.wait(started.job.id)).status == "done"
    vectors = np.load(tmp_path / "vectors.npy")
    assert vectors.shape == (5, 8) and vectors.dtype == np.float32
    assert (tmp_path / "vectors.ids.jsonl").read_text().splitlines() == [str(i) for i in range(5)]
    np.testing.assert_array_equal(vectors[3], fake_vector("chunk number 3", 8))


async def test_a_directory_gives_chunks_named_by_relative_path_and_lines(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    providers["fake"].gate.set()
    (tmp_path / "src").mkdir()
    for name in ("b.py", "a.py"):
        (tmp_path / "src" / name).write_text(f"# {name}")
    started = await runner.start("src", "out.jsonl", format="jsonl")
    with anyio.fail_after(10):
        await runner.wait(started.job.id)
    rows = jsonl_rows(tmp_path / "out.jsonl")
    assert [row["id"] for row in rows] == ["a.py:1-1", "b.py:1-1"]
    assert {key: rows[0][key] for key in ("path", "start_line", "end_line", "language")} == {
        "path": "a.py",
        "start_line": 1,
        "end_line": 1,
        "language": "python",
    }


async def test_cancel_stops_a_running_job_and_keeps_the_finished_windows_cached(
    runner: JobRunner, service: EmbeddingService, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    fake = providers["fake"]
    source = write_chunks(tmp_path / "in.jsonl", 600)  # three windows of 256 for a remote-like provider
    fake.free_first_text = "chunk number 0"  # the first window goes through, the others wait
    started = await runner.start(str(source), "out.jsonl")
    partial = tmp_path / "out.jsonl.partial"
    with anyio.fail_after(10):
        while not partial.exists() or partial.stat().st_size == 0:  # the first window is written
            await anyio.sleep(0.01)
        job = await runner.cancel(started.job.id)
    assert (job.status, job.done) == ("cancelled", 256)
    assert not (tmp_path / "out.jsonl").exists() and not partial.exists()
    assert len(fake.sent) == 256  # nothing was sent after the cancel
    assert service.cache is not None
    assert len(service.cache.get_many(fake.space, fake.sent, 8)) == 256
    assert (await runner.cancel(started.job.id)).status == "cancelled"  # cancelling twice is harmless


async def test_jobs_of_one_provider_queue_while_another_provider_runs_at_once(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    source = write_chunks(tmp_path / "in.jsonl", 3)
    first = await runner.start(str(source), "one.jsonl", provider="fake")
    second = await runner.start(str(source), "two.jsonl", provider="fake")
    other = await runner.start(str(source), "three.jsonl", provider="other")
    with anyio.fail_after(10):
        await providers["fake"].entered.wait()
        await providers["other"].entered.wait()
    statuses = [runner.status(job.job.id).status for job in (first, second, other)]
    assert statuses == ["running", "queued", "running"]
    assert [job.status for job in runner.list()] == ["running", "queued", "running"]  # newest first

    assert (await runner.cancel(second.job.id)).status == "cancelled"  # a queued job never runs
    providers["fake"].gate.set()
    providers["other"].gate.set()
    with anyio.fail_after(10):
        for job in (first, second, other):
            await runner.wait(job.job.id)
    assert [runner.status(job.job.id).status for job in (first, second, other)] == ["done", "cancelled", "done"]
    assert not (tmp_path / "two.jsonl").exists()


async def test_a_provider_failure_fails_the_job_with_the_error_and_resume_finishes_it(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    fake = providers["fake"]
    fake.fail_with = ProviderError("the provider broke; try again")
    fake.gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 4)
    started = await runner.start(str(source), "out.jsonl")
    with anyio.fail_after(10):
        job = await runner.wait(started.job.id)
    assert job.status == "failed" and job.last_error == "the provider broke; try again"
    assert job.error_list == ["the provider broke; try again"]

    fake.fail_with = None
    assert (await runner.resume(job.id)).status == "queued"
    with anyio.fail_after(10):
        assert (await runner.wait(job.id)).status == "done"
    assert len(jsonl_rows(tmp_path / "out.jsonl")) == 4


async def test_a_job_whose_process_died_shows_interrupted_and_resume_sends_only_the_rest(
    settings: Settings,
    runner: JobRunner,
    service: EmbeddingService,
    providers: dict[str, GatedProvider],
    tmp_path: Path,
) -> None:
    fake = providers["fake"]
    fake.gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 10)
    # A job another process was running when it died: its pid is gone, its lease not yet over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}:{dead.stdout.strip()}:x"
    store = JobStore(settings.resolved_data_dir / "jobs.sqlite3", owner=owner)
    started = await runner.start(str(source), "out.jsonl")
    with anyio.fail_after(10):
        await runner.wait(started.job.id)
    (tmp_path / "out.jsonl").unlink()
    assert store.claim(started.job.id) is True  # as the dead process did
    store.close()
    assert runner.status(started.job.id).status == "interrupted"

    first_half = [f"chunk number {i}" for i in range(5)]
    assert service.cache is not None
    service.cache.prune(space=fake.space)
    service.cache.put_many(fake.space, first_half, np.stack([fake_vector(t, 8) for t in first_half]), [0] * 5)
    fake.calls.clear()
    await runner.resume(started.job.id)
    with anyio.fail_after(10):
        job = await runner.wait(started.job.id)
    assert (job.status, job.done, job.cached) == ("done", 10, 5)
    assert fake.sent == [f"chunk number {i}" for i in range(5, 10)]  # the cache answered the rest
    assert [row["id"] for row in jsonl_rows(tmp_path / "out.jsonl")] == list(range(10))


async def test_resume_refuses_a_changed_input_and_an_unknown_job(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    providers["fake"].fail_with = ProviderError("down")
    providers["fake"].gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 2)
    started = await runner.start(str(source), "out.jsonl")
    with anyio.fail_after(10):
        await runner.wait(started.job.id)
    write_chunks(source, 3)
    with pytest.raises(InputError, match="changed since it started"):
        await runner.resume(started.job.id)
    with pytest.raises(InputError, match="no job 'nope'"):
        runner.status("nope")


async def test_bad_records_and_repeated_ids_are_found_before_the_job_is_queued(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\n{"id": 2}\n')
    with pytest.raises(InputError, match=re.escape('bad.jsonl line 2: no "text" field')):
        await runner.start(str(bad), "out.jsonl")
    assert runner.list() == []

    providers["fake"].gate.set()
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    started = await runner.start(str(repeated), "out.jsonl")
    assert started.duplicate_ids is not None and "1 repeated id (e.g. 1)" in started.duplicate_ids
    assert started.job.error_list == [started.duplicate_ids]


async def test_leaving_the_runner_marks_a_running_job_interrupted(
    settings: Settings, service: EmbeddingService, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    source = write_chunks(tmp_path / "in.jsonl", 3)
    async with JobRunner(settings, AllowedRoots((tmp_path,)), engine=InProcessEngine(service)) as runner:
        started = await runner.start(str(source), "out.jsonl")
        with anyio.fail_after(10):
            await providers["fake"].entered.wait()
    store = JobStore(settings.resolved_data_dir / "jobs.sqlite3")
    try:
        job = store.get(started.job.id)
        assert job is not None and job.status == "interrupted" and job.owner is None
    finally:
        store.close()
    assert not (tmp_path / "out.jsonl.partial").exists()


# --- the lease across processes --------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from providers.jobs.store import JobStore
store = JobStore(Path(sys.argv[1]), lease_s=60)
assert store.claim(sys.argv[2])
print("claimed", flush=True)
time.sleep(120)
"""


def test_two_processes_never_hold_one_job_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    job = store.create(
        input="in", output="out", format="jsonl", glob="*", provider="local", model="m", space="s",
        fingerprint="f", total=1,
    )  # fmt: skip
    store.finish(job.id, "interrupted")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), job.id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        assert store.get(job.id).status == "running"  # type: ignore[union-attr]
        assert store.claim(job.id) is False
        assert store.requeue(job.id) is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert store.get(job.id).status == "interrupted"  # type: ignore[union-attr]
        assert store.claim(job.id) is True
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
        store.close()


def test_a_lease_from_another_host_holds_until_it_runs_out(tmp_path: Path) -> None:
    clock = [1000.0]
    other = JobStore(tmp_path / "jobs.sqlite3", owner="elsewhere:1:x", lease_s=15, now=lambda: clock[0])
    mine = JobStore(tmp_path / "jobs.sqlite3", lease_s=15, now=lambda: clock[0])
    job = other.create(
        input="in", output="out", format="jsonl", glob="*", provider="local", model="m", space="s",
        fingerprint="f", total=1,
    )  # fmt: skip
    assert other.claim(job.id) and not mine.claim(job.id)
    clock[0] += 10
    assert other.heartbeat() == set()  # renewed: 15 s from now
    clock[0] += 10
    assert not mine.claim(job.id)
    mine.request_cancel(job.id)
    assert other.heartbeat() == {job.id}  # the holder learns of the cancel on its next beat
    clock[0] += 16
    assert mine.get(job.id).status == "interrupted"  # type: ignore[union-attr]
    assert mine.claim(job.id)
    other.close()
    mine.close()


async def test_a_cancel_asked_by_another_process_stops_the_job_on_the_next_heartbeat(
    settings: Settings, service: EmbeddingService, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    source = write_chunks(tmp_path / "in.jsonl", 3)
    roots = AllowedRoots((tmp_path,))
    async with JobRunner(settings, roots, engine=InProcessEngine(service), heartbeat_s=0.01) as runner:
        started = await runner.start(str(source), "out.jsonl")
        with anyio.fail_after(10):
            await providers["fake"].entered.wait()
        other = JobStore(settings.resolved_data_dir / "jobs.sqlite3")  # as another server process would
        other.request_cancel(started.job.id)
        other.close()
        with anyio.fail_after(10):
            job = await runner.wait(started.job.id)
    assert job.status == "cancelled" and providers["fake"].sent == []


async def test_an_interrupted_job_can_be_cancelled_and_then_resumed(
    settings: Settings, runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    providers["fake"].gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 2)
    started = await runner.start(str(source), "out.jsonl")
    with anyio.fail_after(10):
        await runner.wait(started.job.id)
    dead = JobStore(settings.resolved_data_dir / "jobs.sqlite3", owner=f"{socket.gethostname()}:999999999:x")
    assert dead.claim(started.job.id)
    dead.close()
    assert runner.status(started.job.id).status == "interrupted"
    assert (await runner.cancel(started.job.id)).status == "cancelled"
    await runner.resume(started.job.id)
    with anyio.fail_after(10):
        assert (await runner.wait(started.job.id)).status == "done"
