"""SQLite failing under a running job (issue 24 #5, and the low items on counts and advice).

The runner embeds through a real `EmbeddingService` over the fake providers of tests/test_jobs.py;
another process holds a real lock (`BEGIN EXCLUSIVE`) on a database of the data directory, and a
full disk is SQLite's own SQLITE_FULL (the cache may not grow past its pages).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from providers import EmbeddingResult, EmbeddingService, InputError, ProgressCallback, Settings
from providers.base import InputType, RequestHook
from providers.jobs.engine import InProcessEngine
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from providers.jobs.store import JobStore
from providers.storage import sqlite as storage_sqlite
from tests.fakes import FakeProvider
from tests.test_jobs import GatedProvider, providers, runner, service, write_chunks

__all__ = ["providers", "runner", "service"]  # fixtures, imported for pytest

pytestmark = pytest.mark.anyio

BUSY_S = 1.0


@pytest.fixture(autouse=True)
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock outlasts the busy timeout in a second, not in 30."""
    monkeypatch.setattr(storage_sqlite, "BUSY_TIMEOUT_S", BUSY_S)


LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


class Locker:
    """Another process holding `path` with BEGIN EXCLUSIVE until `release()`."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def locked() -> Iterator[list[Locker]]:
    lockers: list[Locker] = []
    yield lockers
    for locker in lockers:
        locker.close()


class OnLog(logging.Handler):
    """Runs `action` (once) when a record matching `pattern` is logged."""

    def __init__(self, pattern: str, action: object) -> None:
        super().__init__()
        self.pattern, self.action, self.seen = re.compile(pattern), action, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.seen and self.pattern.search(record.getMessage()):
            self.seen = True
            self.action()  # type: ignore[operator]


@pytest.fixture
def on_log() -> Iterator[list[tuple[str, OnLog]]]:
    handlers: list[tuple[str, OnLog]] = []
    yield handlers
    for name, handler in handlers:
        logging.getLogger(name).removeHandler(handler)


def watch(handlers: list[tuple[str, OnLog]], logger: str, pattern: str, action: object) -> OnLog:
    handler = OnLog(pattern, action)
    logging.getLogger(logger).addHandler(handler)
    handlers.append((logger, handler))
    return handler


async def test_a_cache_locked_for_the_whole_job_fails_it_with_the_reason_and_the_runner_goes_on(
    runner: JobRunner, providers: dict[str, GatedProvider], settings: Settings, tmp_path: Path, locked: list[Locker]
) -> None:
    providers["fake"].gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 5)
    locked.append(Locker(settings.resolved_data_dir / "cache.sqlite3"))
    started = await runner.start(str(source), "out.jsonl")
    with anyio.fail_after(60):
        job = await runner.wait(started.job.id)
    assert job.status == "failed"
    assert "the embedding cache at" in (job.last_error or "") and "stayed locked by another process" in job.last_error
    assert "ledger.sqlite3" not in job.last_error  # a passing lock is no reason to move the ledger aside
    locked[0].release()
    await runner.resume(job.id)  # the runner is still up, and the job goes on once the lock is gone
    with anyio.fail_after(30):
        assert (await runner.wait(job.id)).status == "done"


async def test_a_cache_locked_for_a_while_is_waited_out_and_the_job_finishes(
    runner: JobRunner,
    providers: dict[str, GatedProvider],
    settings: Settings,
    tmp_path: Path,
    locked: list[Locker],
    on_log: list[tuple[str, OnLog]],
) -> None:
    providers["fake"].gate.set()
    locker = Locker(settings.resolved_data_dir / "cache.sqlite3")
    locked.append(locker)
    waited = watch(on_log, "providers.storage.cache", "locked by another process; waiting again", locker.release)
    started = await runner.start(str(write_chunks(tmp_path / "in.jsonl", 5)), "out.jsonl")
    with anyio.fail_after(60):
        job = await runner.wait(started.job.id)
    assert waited.seen and (job.status, job.done) == ("done", 5)


async def test_a_full_disk_under_the_cache_fails_the_job_saying_so(
    runner: JobRunner, service: EmbeddingService, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    providers["fake"].gate.set()
    assert service.cache is not None
    db = service.cache._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    started = await runner.start(str(write_chunks(tmp_path / "in.jsonl", 400)), "out.jsonl")
    with anyio.fail_after(30):
        job = await runner.wait(started.job.id)
    assert job.status == "failed" and "the disk is full" in (job.last_error or "")
    assert "Free some space on it and retry" in job.last_error and "ledger.sqlite3" not in job.last_error
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.partial").exists()


async def test_a_locked_job_store_neither_stops_the_event_loop_nor_the_job(
    settings: Settings,
    service: EmbeddingService,
    providers: dict[str, GatedProvider],
    tmp_path: Path,
    locked: list[Locker],
    on_log: list[tuple[str, OnLog]],
) -> None:
    source = write_chunks(tmp_path / "in.jsonl", 3)
    roots = AllowedRoots((tmp_path,))
    gaps: list[float] = []
    async with JobRunner(settings, roots, engine=InProcessEngine(service), heartbeat_s=0.01) as runner:
        started = await runner.start(str(source), "out.jsonl")
        with anyio.fail_after(10):
            await providers["fake"].entered.wait()
        lock = Locker(settings.resolved_data_dir / "jobs.sqlite3")
        locked.append(lock)
        beat_failed = watch(on_log, "providers.jobs.runner", "were not renewed", lambda: None)
        with anyio.fail_after(30):
            last = anyio.current_time()
            while not beat_failed.seen:  # the loop keeps ticking while a beat waits out the lock
                await anyio.sleep(0.02)
                now = anyio.current_time()
                gaps.append(now - last)
                last = now
        assert runner.status(started.job.id).status == "running"  # and answers
        lock.release()
        providers["fake"].gate.set()
        with anyio.fail_after(30):
            job = await runner.wait(started.job.id)
    assert (job.status, job.done) == ("done", 3)
    assert max(gaps) < 0.75 * BUSY_S


# --- the low items ---------------------------------------------------------------------------------


class TwoRequests(FakeProvider):
    """Bills each call as two requests; the second waits for `gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()

    async def embed_each(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        progress: ProgressCallback | None = None,
        on_request: RequestHook | None = None,
    ) -> EmbeddingResult:
        half = len(texts) // 2
        first = await super().embed(texts[:half])
        if on_request is not None:
            await on_request(list(range(half)), first)
        await self.gate.wait()
        rest = await super().embed(texts[half:])
        if on_request is not None:
            await on_request(list(range(half, len(texts))), rest)
        whole = await super().embed(texts)
        return EmbeddingResult(
            vectors=whole.vectors, provider=self.name, model=self.model, tokens=whole.tokens, requests=2
        )


async def test_a_jobs_tokens_and_usd_keep_up_with_the_ledger_request_by_request(
    settings: Settings, tmp_path: Path
) -> None:
    priced = Settings(data_dir=settings.data_dir, prices={"fake-small": 1_000_000.0})  # $1 a token
    provider = TwoRequests()
    service = EmbeddingService("fake", settings=priced, factories={"fake": lambda *_: provider})
    source = write_chunks(tmp_path / "in.jsonl", 10)
    roots = AllowedRoots((tmp_path,))
    engine = InProcessEngine(service)
    async with JobRunner(priced, roots, engine=engine, progress_every_s=0, resume_free=False) as runner:
        started = await runner.start(str(source), "out.jsonl")
        with anyio.fail_after(30):
            while (ledger := service.ledger.report().total).tokens == 0:  # the first request is billed
                await anyio.sleep(0.01)
            # As a kill -9 would find it now, with the window still in flight:
            while (job := runner.status(started.job.id)).tokens != ledger.tokens:
                await anyio.sleep(0.01)
        assert (job.tokens, job.usd) == (15, 15.0) and job.done == 0
        provider.gate.set()
        with anyio.fail_after(30):
            job = await runner.wait(started.job.id)
        assert service.ledger.report().total.tokens == 30
    assert (job.status, job.tokens, job.usd) == ("done", 30, 30.0)


async def test_resuming_a_job_another_server_holds_says_who_holds_it(
    runner: JobRunner, providers: dict[str, GatedProvider], settings: Settings, tmp_path: Path
) -> None:
    providers["fake"].fail_with = RuntimeError("down")
    providers["fake"].gate.set()
    started = await runner.start(str(write_chunks(tmp_path / "in.jsonl", 2)), "out.jsonl")
    with anyio.fail_after(10):
        assert (await runner.wait(started.job.id)).status == "failed"
    other = JobStore(settings.resolved_data_dir / "jobs.sqlite3", owner=f"{socket.gethostname()}:{os.getpid()}:other")
    try:
        assert other.requeue(started.job.id)  # another live server resumed it first
        with pytest.raises(InputError) as refused:
            await runner.resume(started.job.id)
    finally:
        other.close()
    message = str(refused.value)
    assert f"is already taken by another server (pid {os.getpid()} on {socket.gethostname()})" in message
    assert "a job runs in one server at a time" in message and "live process" not in message
