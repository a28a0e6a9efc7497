"""Jobs that outlive a server (issue 25): rate over the run, resuming by themselves, checkpoints.

The runner over the fake providers of tests/test_jobs.py (free or paid through SIGNAL_HUB_PRICES),
the real packaged model for work kept as each model call completes.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import anyio
import pytest

from providers import EmbeddingService, InputError, Settings
from providers.jobs.engine import InProcessEngine
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from providers.jobs.store import JobStore
from tests.test_jobs import GatedProvider, jsonl_rows, providers, service, write_chunks

__all__ = ["providers", "service"]  # fixtures, imported for pytest

pytestmark = pytest.mark.anyio


def test_rate_per_min_is_over_the_runs_own_time_and_stays_once_it_ended(tmp_path: Path) -> None:
    clock = [1000.0]
    store = JobStore(tmp_path / "jobs.sqlite3", now=lambda: clock[0])
    job = store.create(
        input="in", output="out", format="jsonl", glob="*", provider="local", model="m", space="s",
        fingerprint="f", total=15,
    )  # fmt: skip
    assert store.claim(job.id)
    clock[0] += 1.5
    store.finish(job.id, "done", counts={"done": 15, "cached": 0})
    for later in (0.0, 1.0, 100.0):  # the issue saw 597, then 596, then 327 as the clock moved on
        assert store.get(job.id).rate_per_min(clock[0] + later) == 600.0  # type: ignore[union-attr]
    running = store.create(
        input="in", output="out2", format="jsonl", glob="*", provider="local", model="m", space="s",
        fingerprint="f", total=10,
    )  # fmt: skip
    assert store.claim(running.id)
    store.progress(running.id, done=4, cached=0)
    assert store.get(running.id).rate_per_min(clock[0] + 2.0) == 120.0  # type: ignore[union-attr]
    store.close()


def interrupt(settings: Settings, job_id: str) -> None:
    """As a server killed while running the job leaves it."""
    dead = JobStore(settings.resolved_data_dir / "jobs.sqlite3", owner=f"{socket.gethostname()}:999999999:x")
    assert dead.claim(job_id)
    dead.close()


async def one_done_job(settings: Settings, service: EmbeddingService, tmp_path: Path, fake: GatedProvider) -> str:
    fake.gate.set()
    async with JobRunner(settings, AllowedRoots((tmp_path,)), engine=InProcessEngine(service)) as runner:
        started = await runner.start(str(write_chunks(tmp_path / "in.jsonl", 4)), "out.jsonl")
        with anyio.fail_after(10):
            await runner.wait(started.job.id)
    (tmp_path / "out.jsonl").unlink()
    interrupt(settings, started.job.id)
    return started.job.id


@pytest.mark.parametrize(("price", "by_itself"), [(0.0, True), (1.0, False)])
async def test_a_free_providers_job_resumes_when_the_next_runner_starts_a_paid_ones_waits(
    settings: Settings, providers: dict[str, GatedProvider], tmp_path: Path, price: float, by_itself: bool
) -> None:
    priced = dataclasses.replace(settings, prices={"fake-small": price})
    factories = {"fake": lambda *_: providers["fake"]}
    first = EmbeddingService("fake", settings=priced, factories=factories)
    job_id = await one_done_job(priced, first, tmp_path, providers["fake"])
    second = EmbeddingService("fake", settings=priced, factories=factories)
    async with JobRunner(priced, AllowedRoots((tmp_path,)), engine=InProcessEngine(second)) as runner:
        assert runner.resumes_by_itself(runner.status(job_id)) is by_itself
        if by_itself:
            with anyio.fail_after(10):
                while runner.status(job_id).status == "interrupted":
                    await anyio.sleep(0.01)
                job = await runner.wait(job_id)
            assert job.status == "done" and len(jsonl_rows(tmp_path / "out.jsonl")) == 4
        else:
            assert await runner.resume_free_jobs() == ()
            assert runner.status(job_id).status == "interrupted" and not (tmp_path / "out.jsonl").exists()


async def test_two_runners_starting_together_resume_a_free_job_once(
    settings: Settings, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    free = dataclasses.replace(settings, prices={"fake-small": 0.0})
    factories = {"fake": lambda *_: providers["fake"]}
    job_id = await one_done_job(
        free, EmbeddingService("fake", settings=free, factories=factories), tmp_path, providers["fake"]
    )
    roots = AllowedRoots((tmp_path,))
    one = JobRunner(
        free,
        roots,
        engine=InProcessEngine(EmbeddingService("fake", settings=free, factories=factories)),
        resume_free=False,
    )
    two = JobRunner(
        free,
        roots,
        engine=InProcessEngine(EmbeddingService("fake", settings=free, factories=factories)),
        resume_free=False,
    )
    async with one, two:
        resumed = [*await one.resume_free_jobs(), *await two.resume_free_jobs()]
        assert resumed == [job_id]
        with anyio.fail_after(10):
            await one.wait(job_id)
    assert len(jsonl_rows(tmp_path / "out.jsonl")) == 4


async def test_checkpoint_all_leaves_running_and_queued_jobs_interrupted_with_their_progress(
    settings: Settings, service: EmbeddingService, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    fake = providers["fake"]
    fake.free_first_text = "chunk number 0"  # the first window goes through, the rest waits
    async with JobRunner(settings, AllowedRoots((tmp_path,)), engine=InProcessEngine(service)) as runner:
        running = await runner.start(str(write_chunks(tmp_path / "in.jsonl", 300)), "out.jsonl")
        queued = await runner.start(str(write_chunks(tmp_path / "other.jsonl", 2)), "other-out.jsonl")
        with anyio.fail_after(10):
            while runner.status(running.job.id).done < 256:
                await anyio.sleep(0.01)
        await runner.checkpoint_all()
        stopped, waiting = runner.status(running.job.id), runner.status(queued.job.id)
        assert (stopped.status, stopped.done, stopped.owner) == ("interrupted", 256, None)
        assert (waiting.status, waiting.owner) == ("interrupted", None)
        with pytest.raises(InputError, match="this server is stopping"):
            await runner.start(str(tmp_path / "other.jsonl"), "third.jsonl")
    assert len(fake.sent) == 256


@pytest.mark.slow
async def test_a_cancelled_local_call_keeps_the_model_calls_it_finished(shared_data_dir: Path, tmp_path: Path) -> None:
    # A CLI window is 256 texts: Ctrl-C before the window's end kept nothing (issue 25).
    settings = Settings(data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "onnx").symlink_to(shared_data_dir / "onnx", target_is_directory=True)
    texts = [f"def function_{i}(x):\n    return x * {i}" for i in range(256)]
    async with EmbeddingService("local", settings=settings) as service:
        assert service.cache is not None
        with anyio.CancelScope() as scope:

            async def stop_after_the_first_step(done: int, total: int) -> None:
                if done:
                    scope.cancel()

            with anyio.fail_after(300):
                await service.embed(texts, progress=stop_after_the_first_step)
        assert scope.cancelled_caught
        kept = service.cache.get_many(service.provider.space, texts, service.provider.dimensions)
        assert 0 < len(kept) < 256  # the model steps done before the cancel (8 windows a step)
        again = await service.embed(texts)
    assert again.cached == len(kept)


async def test_the_server_side_checkpoint_reaches_the_servers_runner(shared_data_dir: Path, project: Path) -> None:
    from mcp import Client

    from server import build_server
    from server.tools.jobs import _RUNNERS, checkpoint_jobs

    async with Client(build_server(Settings(data_dir=shared_data_dir, cache=False))):
        (service, runner), *_ = _RUNNERS.items()
        await checkpoint_jobs(service)
        with pytest.raises(InputError, match="this server is stopping"):
            await runner.start(str(write_chunks(project / "in.jsonl", 1)), "out.jsonl")
