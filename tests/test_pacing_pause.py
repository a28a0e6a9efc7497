"""A long pause the server asked for (429, Retry-After) is an outage, bounded by the request's retry budget.

Issue 24, high 3: one 429 with `retry-after: 3600` used to make every later `acquire()` wait an
hour, in every process on the data directory, even after a restart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from providers import EmbeddingService, Settings
from providers.errors import RateLimitError
from providers.fallback import CircuitBreaker, CircuitState, FallbackPolicy
from providers.remote.pacing import PACER_FILE, SharedPacer
from providers.remote.ratelimit import PausedError, RateLimiter
from providers.service.facade import PROVIDER_FACTORIES
from tests.fakes import FakeProvider
from tests.loopback_openai import LoopbackOpenAI
from tests.test_pacing import VirtualTime
from tests.test_ratelimit import FakeClock

pytestmark = pytest.mark.anyio
ENDPOINT = "https://api.example.test/v1"
KEY = "sk-pause-key"
WAIT = 20


async def test_a_pause_longer_than_the_budget_raises_at_once_saying_when_requests_resume() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(3600)
    with pytest.raises(PausedError, match=r"3600 s more.*takes requests again at about \d\d:\d\d:\d\d UTC") as raised:
        await limiter.acquire(10, within=120)
    assert clock.sleeps == []  # no wait at all
    assert raised.value.resume_in == pytest.approx(3600)


async def test_a_pause_within_the_budget_is_waited_out() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(5)
    await limiter.acquire(10, within=120)
    assert sum(clock.sleeps) == pytest.approx(5)


async def test_a_bucket_wait_past_the_budget_is_a_rate_limit_error_not_a_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, clock=clock, sleep=clock.sleep)
    await limiter.acquire(6000)  # the whole minute's tokens
    with pytest.raises(RateLimitError, match="no turn within its retry budget"):
        await limiter.acquire(6000, within=10)
    assert sum(clock.sleeps) <= 10


async def test_a_fresh_process_on_the_data_directory_falls_back_at_once_instead_of_hanging(tmp_path: Path) -> None:
    time = VirtualTime()
    first = SharedPacer(tmp_path / PACER_FILE, ENDPOINT, KEY, clock=time, sleep=time.sleep)
    first.pause(3600)
    first.close()
    restarted = SharedPacer(tmp_path / PACER_FILE, ENDPOINT, KEY, clock=time, sleep=time.sleep)
    try:
        with anyio.fail_after(WAIT), pytest.raises(PausedError):
            await restarted.acquire(10, within=120)
    finally:
        restarted.close()
    assert time.now == 1_700_000_000.0  # raised without waiting


async def test_a_pause_written_by_a_process_whose_clock_runs_ahead_lasts_what_the_header_said(tmp_path: Path) -> None:
    time = VirtualTime()
    ahead = SharedPacer(tmp_path / PACER_FILE, ENDPOINT, KEY, clock=lambda: time.now + 3600, sleep=time.sleep)
    ahead.pause(10)  # retry-after: 10, stored as an hour and ten seconds ahead of our clock
    ahead.close()
    reader = SharedPacer(tmp_path / PACER_FILE, ENDPOINT, KEY, clock=time, sleep=time.sleep)
    started = time.now

    async def take() -> None:
        await reader.acquire(10, within=120)

    try:
        await time.run(take)
    finally:
        reader.close()
    assert time.now - started <= 10.0 + 1e-6


async def test_a_pacer_file_of_the_old_release_keeps_no_pause(tmp_path: Path) -> None:
    time = VirtualTime()
    path = tmp_path / PACER_FILE
    old = SharedPacer(path, ENDPOINT, KEY, clock=time, sleep=time.sleep)
    old.pause(3600)
    old.close()
    with sqlite3.connect(path) as db:  # the old schema: no pause_left column
        db.execute("ALTER TABLE pacer DROP COLUMN pause_left")
    reader = SharedPacer(path, ENDPOINT, KEY, clock=time, sleep=time.sleep)
    try:
        with anyio.fail_after(WAIT):
            await reader.acquire(10, within=120)
    finally:
        reader.close()
    assert time.now == 1_700_000_000.0


def test_a_pause_opens_the_circuit_at_once_until_the_server_takes_requests_again() -> None:
    now = [1000.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=60, now=lambda: now[0])
    breaker.record_failure(PausedError("paused", resume_in=900))
    assert breaker.state is CircuitState.OPEN and breaker.retry_in_s == pytest.approx(900)
    now[0] += 600
    assert breaker.state is CircuitState.OPEN  # past the usual 60 s cool-down, still within the pause
    now[0] += 301
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.fixture
def openai_server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key=KEY) as server:
        yield server


async def test_one_429_asking_an_hour_falls_back_in_every_later_call_and_after_a_restart(
    openai_server: LoopbackOpenAI, tmp_path: Path
) -> None:
    fake = FakeProvider(name="fake")
    factories = {"openai": PROVIDER_FACTORIES["openai"], "fake": lambda s, m, d: fake}
    settings = Settings(
        provider="openai",
        data_dir=tmp_path,
        openai_base_url=openai_server.base_url,
        openai_api_key=KEY,
        fallback=FallbackPolicy(chain=("openai", "fake")),
    )
    build: Callable[[], EmbeddingService] = lambda: EmbeddingService(  # noqa: E731
        "openai", settings=settings, factories=factories
    )
    openai_server.inject("429", retry_after_ms=3_600_000)
    service = build()
    try:
        with anyio.fail_after(WAIT):
            first = await service.embed(["def a(): pass"])
        circuit = {s.name: s.circuit for s in service.provider_statuses()}["openai"]
        with anyio.fail_after(WAIT):
            second = await service.embed(["def b(): pass"])
    finally:
        await service.aclose()
    assert first.provider == second.provider == "fake"
    assert "takes requests again at about" in (first.fallback_reason or "")
    assert circuit == "open"  # at the first such answer
    assert "unavailable" in (second.fallback_reason or "") and "tried again in" in (second.fallback_reason or "")
    restarted = build()  # another process, or the same after a restart
    try:
        with anyio.fail_after(WAIT):
            third = await restarted.embed(["def c(): pass"])
    finally:
        await restarted.aclose()
    assert third.provider == "fake" and "takes requests again" in (third.fallback_reason or "")
    assert openai_server.request_count == 1  # only the request that met the 429 was sent


async def test_the_budget_counts_a_requests_own_turn_not_the_queue_of_its_process() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock, sleep=clock.sleep)  # 10 tokens a second
    await limiter.acquire(600)
    charged: list[int] = []

    async def one() -> None:
        charged.append(await limiter.acquire(30, within=10))  # each waits 3 s once its turn comes

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(one)
    assert charged == [30] * 8 and sum(clock.sleeps) == pytest.approx(24)


def test_only_a_rate_limit_pause_longer_than_the_budget_becomes_an_outage() -> None:
    from providers.remote.ratelimit import paused_if_long
    from providers.remote.retry import Failure

    error = RateLimitError("kept rate limiting")
    assert paused_if_long(error, Failure(retry=True, rate_limited=True, retry_after=60), 120) is error
    assert paused_if_long(error, Failure(retry=True, retry_after=3600), 120) is error  # a 503's, not a pause
    long = paused_if_long(error, Failure(retry=True, rate_limited=True, retry_after=3600), 120)
    assert isinstance(long, PausedError) and long.resume_in == 3600
    assert str(long).startswith("kept rate limiting") and "takes requests again at about" in str(long)
