"""The shared pacer on a virtual clock: several pacers on one database stand for several processes."""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from providers.openai import OpenAIProvider
from providers.remote import pacing
from providers.remote.pacing import PACER_FILE, SharedPacer, build_limiter, pacer_scope
from providers.remote.ratelimit import RateLimiter
from providers.settings import Settings

ENDPOINT = "https://api.example.test/v1"
KEY = "sk-secret-key-1234"


class VirtualTime:
    """A clock shared by every task: time jumps to the next sleeper's wake-up once all are blocked."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), wake))
        await wake.wait()

    async def run(self, *jobs: Callable[[], Awaitable[object]]) -> None:
        """Run `jobs` to the end, moving time on whenever they all wait for it."""
        with anyio.fail_after(10):
            async with anyio.create_task_group() as driver:

                async def advance() -> None:
                    while True:
                        await anyio.wait_all_tasks_blocked()
                        if self._sleepers:
                            self.now, _, wake = heapq.heappop(self._sleepers)
                            wake.set()
                        else:
                            await anyio.lowlevel.checkpoint()

                driver.start_soon(advance)
                async with anyio.create_task_group() as group:
                    for job in jobs:
                        group.start_soon(job)
                driver.cancel_scope.cancel()


@pytest.fixture
def clock() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / PACER_FILE


def pacer(path: Path, clock: VirtualTime, key: str = KEY, **kwargs: float | None) -> SharedPacer:
    return SharedPacer(path, ENDPOINT, key, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_public_api_is_pinned() -> None:
    assert pacing.__all__ == ["PACER_FILE", "SharedPacer", "build_limiter", "pacer_scope"]


def test_the_scope_names_the_endpoint_and_a_hash_never_the_key(path: Path, clock: VirtualTime) -> None:
    scope = pacer_scope(ENDPOINT + "/", KEY)
    assert scope.startswith(ENDPOINT + " ") and KEY not in scope and "1234" not in scope
    assert scope == pacer_scope(ENDPOINT, KEY) != pacer_scope(ENDPOINT, KEY + "x")
    shared = pacer(path, clock, tpm=1000)
    assert shared.tpm == 1000 and shared.shared
    shared.close()
    assert KEY.encode() not in path.read_bytes()


def test_a_data_directory_makes_the_limiter_shared(tmp_path: Path) -> None:
    assert type(build_limiter(10, None)) is RateLimiter
    shared = build_limiter(10, None, shared_in=tmp_path, endpoint=ENDPOINT, key=KEY)
    assert isinstance(shared, SharedPacer) and shared.path == tmp_path / PACER_FILE and shared.rpm == 10


@pytest.mark.anyio
async def test_pacers_of_one_key_take_from_the_same_buckets(path: Path, clock: VirtualTime) -> None:
    first, second = pacer(path, clock, tpm=1000), pacer(path, clock, tpm=1000)
    other_key = pacer(path, clock, key="sk-other", tpm=1000)
    await clock.run(partial(first.acquire, 600))
    started = clock.now
    await clock.run(partial(other_key.acquire, 600))  # another key: its own, full bucket
    assert clock.now == started
    await clock.run(partial(second.acquire, 600))
    assert clock.now - started == pytest.approx(12.0)  # 200 missing at 1000 per 60 s


@pytest.mark.anyio
async def test_settled_tokens_go_back_to_the_shared_bucket(path: Path, clock: VirtualTime) -> None:
    first, second = pacer(path, clock, tpm=1000), pacer(path, clock, tpm=1000)
    charged = 0

    async def use() -> None:
        nonlocal charged
        charged = await first.acquire(800)

    await clock.run(use)
    first.settle(charged, estimated=800, used=300)
    first.update_from_headers({})  # the refund rides on the next transaction
    started = clock.now
    await clock.run(partial(second.acquire, 700))
    assert clock.now == started


@pytest.mark.anyio
async def test_limits_learnt_from_headers_are_shared(path: Path, clock: VirtualTime) -> None:
    learner = pacer(path, clock)
    learner.update_from_headers(
        {
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "54s",
            "x-ratelimit-limit-requests": "500",
        }
    )
    newcomer, stricter = pacer(path, clock), pacer(path, clock, tpm=600)
    assert (newcomer.rpm, newcomer.tpm) == (500, 1000)
    assert stricter.tpm == 600  # a lower configured limit still holds for its process
    started = clock.now
    await clock.run(partial(newcomer.acquire, 500))
    assert clock.now - started == pytest.approx(24.0)  # 400 missing at 1000 per 60 s


@pytest.mark.anyio
async def test_a_pause_asked_of_one_process_holds_them_all(path: Path, clock: VirtualTime) -> None:
    first, second = pacer(path, clock, rpm=6000), pacer(path, clock, rpm=6000)
    first.pause(2.5)
    started = clock.now
    await clock.run(second.acquire)
    assert clock.now - started == pytest.approx(2.5)


@pytest.mark.anyio
async def test_a_one_text_call_goes_before_a_busy_batch(path: Path, clock: VirtualTime) -> None:
    batch, agent = pacer(path, clock, tpm=6000), pacer(path, clock, tpm=6000)  # 100 tokens a second
    finished: dict[str, float] = {}
    started = clock.now

    async def busy_batch() -> None:
        for _ in range(4):
            await batch.acquire(6000)  # each needs the whole minute's bucket
        finished["batch"] = clock.now - started

    async def one_text_call() -> None:
        await clock.sleep(1.0)  # arrives while the batch waits for its second request
        await agent.acquire(200)
        finished["agent"] = clock.now - started

    await clock.run(busy_batch, one_text_call)
    assert finished["agent"] == pytest.approx(2.0)  # 1 s more for its own 200 tokens, not a minute
    assert finished["batch"] == pytest.approx(182.0)  # the batch lost just those 2 s


@pytest.mark.anyio
async def test_a_waiting_process_gets_its_turn(path: Path, clock: VirtualTime) -> None:
    first, second = pacer(path, clock, tpm=6000), pacer(path, clock, tpm=6000)
    order: list[str] = []
    await clock.run(partial(first.acquire, 6000, interactive=False))  # empty now

    async def big() -> None:
        await first.acquire(3000, interactive=False)
        order.append("big")

    async def small_but_later() -> None:
        await clock.sleep(1.0)
        await second.acquire(1000, interactive=False)  # would fit first, but asked second
        order.append("small")

    started = clock.now
    await clock.run(big, small_but_later)
    assert order == ["big", "small"]
    assert clock.now - started == pytest.approx(40.0, abs=0.1)


@pytest.mark.anyio
async def test_a_dead_waiters_turn_lapses_with_its_lease(path: Path, clock: VirtualTime) -> None:
    dead, alive = pacer(path, clock, tpm=6000), pacer(path, clock, tpm=6000)
    await clock.run(partial(dead.acquire, 6000, interactive=False))
    # It queues for another full bucket, then its process dies: it never comes back.
    wait, ticket, _ = dead._synced(partial(dead._take_or_queue, 6000, 1, None))
    assert wait > 0 and ticket is not None
    started = clock.now
    await clock.run(partial(alive.acquire, 100, interactive=False))
    # Not the minute the dead one wanted: its lease, and at most one renewal period more.
    assert alive.lease <= clock.now - started <= alive.lease * 1.25 + 0.01


@pytest.mark.anyio
async def test_a_cancelled_waiter_gives_its_place_up_at_once(path: Path, clock: VirtualTime) -> None:
    first = pacer(path, clock, tpm=6000)
    await clock.run(partial(first.acquire, 6000))

    async def gives_up() -> None:
        with anyio.move_on_after(0):  # a cancelled call: nothing more to send
            await first.acquire(6000, interactive=False)

    await clock.run(gives_up)
    assert _waiters(path) == 0


@pytest.mark.anyio
async def test_until_a_limit_is_known_one_request_finds_it_out(path: Path, clock: VirtualTime) -> None:
    first, second = pacer(path, clock), pacer(path, clock)
    done: list[str] = []

    async def probe() -> None:
        charged = await first.acquire(500)
        await clock.sleep(0.5)  # the request's round trip
        first.settle(charged, 500, 500)
        first.update_from_headers({"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "500"})
        done.append("probe")

    async def next_one() -> None:
        await clock.sleep(0.1)
        await second.acquire(400)
        done.append("next")

    await clock.run(probe, next_one)
    assert done == ["probe", "next"] and second.tpm == 1000


@pytest.mark.anyio
async def test_an_endpoint_that_reports_no_limits_is_not_probed_for_ever(path: Path, clock: VirtualTime) -> None:
    client = pacer(path, clock)
    started = clock.now

    async def requests() -> None:
        for _ in range(10):
            charged = await client.acquire(100)
            client.settle(charged, 100, 100)
            client.update_from_headers({"content-type": "application/json"})

    await clock.run(requests)
    assert clock.now == started


@pytest.mark.anyio
async def test_a_locked_database_falls_back_to_pacing_alone_and_says_so_once(
    path: Path, clock: VirtualTime, capsys: pytest.CaptureFixture[str]
) -> None:
    first = pacer(path, clock, tpm=1000)
    await clock.run(partial(first.acquire, 600))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # like a filesystem whose locks never succeed
    try:
        second = SharedPacer(path, ENDPOINT, KEY, tpm=1000, clock=clock, sleep=clock.sleep, lock_timeout=0.01)
        first._lock_timeout = 0.01
        await clock.run(partial(second.acquire, 600), partial(first.acquire, 100))
        await clock.run(partial(second.acquire, 100))
        assert not second.shared and not first.shared
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert err.count("paces itself alone") == 2 and KEY not in err  # once per process
    assert str(path) in err


@pytest.mark.anyio
async def test_a_database_that_cannot_be_opened_falls_back(
    tmp_path: Path, clock: VirtualTime, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-directory").write_text("")
    alone = pacer(tmp_path / "not-a-directory" / PACER_FILE, clock, rpm=60)
    await clock.run(alone.acquire, alone.acquire)
    assert not alone.shared and alone.rpm == 60
    assert capsys.readouterr().err.count("paces itself alone") == 1


@pytest.mark.anyio
async def test_the_pacer_waits_for_the_key_before_sharing(path: Path, clock: VirtualTime) -> None:
    key: str | None = None
    later = SharedPacer(path, ENDPOINT, lambda: key, rpm=60, clock=clock, sleep=clock.sleep)
    assert not later.shared and not path.exists()
    key = KEY
    await clock.run(later.acquire)
    assert later.shared


def _waiters(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM pacer_waiters").fetchone()[0])
    finally:
        db.close()


def test_providers_built_from_settings_share_their_pacing_unless_turned_off(tmp_path: Path) -> None:
    shared = OpenAIProvider.from_settings(Settings(data_dir=tmp_path, openai_api_key=KEY)).limiter
    assert isinstance(shared, SharedPacer) and shared.path == tmp_path / PACER_FILE
    off = Settings.from_env({"SIGNAL_HUB_DATA_DIR": str(tmp_path), "SIGNAL_HUB_SHARED_PACING": "off"})
    assert off.shared_pacing is False and Settings.from_env({}).shared_pacing is True
    assert type(OpenAIProvider.from_settings(off).limiter) is RateLimiter


@pytest.mark.anyio
async def test_a_probe_that_got_no_answer_lets_the_next_request_try(path: Path, clock: VirtualTime) -> None:
    first, second = pacer(path, clock), pacer(path, clock)
    await clock.run(partial(first.acquire, 100))
    first.settle(100, 100, None)  # timed out: no headers will come
    started = clock.now
    await clock.run(partial(second.acquire, 100))
    assert clock.now == started


@pytest.mark.anyio
async def test_a_database_broken_mid_run_falls_back_and_keeps_learning_alone(
    path: Path, clock: VirtualTime, capsys: pytest.CaptureFixture[str]
) -> None:
    client = pacer(path, clock, tpm=1000)
    await clock.run(partial(client.acquire, 100))
    vandal = sqlite3.connect(path, isolation_level=None)
    vandal.execute("DROP TABLE pacer")
    vandal.close()
    charged = 0

    async def use() -> None:
        nonlocal charged
        charged = await client.acquire(400)

    await clock.run(use)
    client.settle(charged, estimated=400, used=200)
    assert not client.shared and client.token_ratio == pytest.approx(0.5)
    assert capsys.readouterr().err.count("paces itself alone") == 1
