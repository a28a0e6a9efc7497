"""The client-side rate limiter, on a fake clock: nothing here really sleeps."""

from __future__ import annotations

import email.utils

import anyio
import anyio.lowlevel
import pytest

from providers.remote import ratelimit
from providers.remote.ratelimit import RateLimiter, parse_duration, parse_retry_after


class FakeClock:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, **kwargs: float | None) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_public_api_is_pinned() -> None:
    assert ratelimit.__all__ == [
        "INTERACTIVE_TOKENS",
        "Clock",
        "PausedError",
        "RateLimiter",
        "Sleep",
        "WaitQueue",
        "parse_duration",
        "parse_retry_after",
        "paused_if_long",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("12ms", 0.012),
        ("2m3.5s", 123.5),
        ("1h0m0s", 3600.0),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("0.5", 0.5),
        (" 7s ", 7.0),
    ],
)
def test_durations_in_the_apis_formats_are_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "-1", "-1s", "soon", "5x", "1s5", "inf", "nan", "m"])
def test_missing_negative_or_unreadable_durations_are_ignored(text: str | None) -> None:
    assert parse_duration(text) is None


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"Retry-After-Ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "-5", "retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "whenever"}) is None


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=lambda: 1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": date}, now=lambda: 2_000_000.0) == 0.0


@pytest.mark.parametrize("kwargs", [{"rpm": 0}, {"tpm": -1}, {"window": 0}])
def test_limits_must_be_positive(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_minutes_requests_go_at_once_then_one_per_refill(clock: FakeClock) -> None:
    rate = limiter(clock, rpm=60)
    for _ in range(60):
        await rate.acquire()
    assert clock.sleeps == []
    await rate.acquire()
    assert clock.sleeps == [1.0]


@pytest.mark.anyio
async def test_tokens_wait_for_the_bucket_to_refill(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    assert await rate.acquire(600) == 600
    await rate.acquire(600)
    assert clock.sleeps == [pytest.approx(12.0)]  # 200 missing at 1000 per 60 s


@pytest.mark.anyio
async def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    await rate.acquire(400)
    await rate.acquire(5000)  # would never fit: it goes once the bucket is full
    assert clock.sleeps == [pytest.approx(24.0)]


@pytest.mark.anyio
async def test_without_limits_nothing_waits(clock: FakeClock) -> None:
    rate = limiter(clock)
    for _ in range(1000):
        await rate.acquire(1_000_000)
    assert clock.sleeps == [] and rate.rpm is None and rate.tpm is None


@pytest.mark.anyio
async def test_a_pause_holds_every_request(clock: FakeClock) -> None:
    rate = limiter(clock, rpm=6000)
    rate.pause(2.5)
    await rate.acquire()
    await rate.acquire()
    assert clock.sleeps == [2.5]


@pytest.mark.anyio
async def test_remaining_headers_lower_the_local_picture(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    rate.update_from_headers({"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "54s"})
    await rate.acquire(500)
    assert clock.sleeps == [pytest.approx(24.0)]  # 400 missing at 1000 per 60 s


@pytest.mark.anyio
async def test_reset_headers_slow_the_refill_to_the_servers_rate(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    # 900 missing, full again in 1m48s: the server refills 8.33 tokens a second, not 16.67.
    rate.update_from_headers({"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "1m48s"})
    await rate.acquire(500)
    assert clock.sleeps == [pytest.approx(48.0)]


@pytest.mark.anyio
async def test_remaining_never_raises_the_local_picture(clock: FakeClock) -> None:
    rate = limiter(clock, rpm=2)
    await rate.acquire()
    await rate.acquire()
    rate.update_from_headers({"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "0s"})
    await rate.acquire()
    assert clock.sleeps == [30.0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "-1", "x-ratelimit-limit-tokens": "-1"},
        {"x-ratelimit-remaining-tokens": "lots", "x-ratelimit-reset-tokens": "later"},
    ],
)
async def test_missing_or_minus_one_headers_change_nothing(clock: FakeClock, headers: dict[str, str]) -> None:
    rate = limiter(clock, tpm=1000)
    rate.update_from_headers(headers)
    await rate.acquire(1000)
    assert clock.sleeps == [] and rate.tpm == 1000


@pytest.mark.anyio
async def test_unconfigured_limits_are_learned_from_the_headers(clock: FakeClock) -> None:
    rate = limiter(clock, window=1.0)
    rate.update_from_headers(
        {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-limit-tokens": "UNLIMITED",
        }
    )
    assert (rate.rpm, rate.tpm) == (10, None)
    await rate.acquire()
    await rate.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]  # 10 a second once the one remaining is used


def test_a_configured_limit_below_the_servers_is_kept(clock: FakeClock) -> None:
    rate = limiter(clock, rpm=100)
    rate.update_from_headers({"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2999"})
    assert rate.rpm == 100
    rate.update_from_headers({"x-ratelimit-limit-requests": "50"})
    assert rate.rpm == 50


@pytest.mark.anyio
async def test_reported_usage_refunds_the_estimate_and_teaches_the_ratio(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    charged = await rate.acquire(800)
    rate.settle(charged, estimated=800, used=200)  # the estimate counted 4x too many
    assert rate.token_ratio == pytest.approx(0.25)
    assert rate.charge_for(4000) == 1000
    assert await rate.acquire(4000) == 1000
    assert clock.sleeps == [pytest.approx(12.0)]  # 800 left after the refund; 200 more needed


@pytest.mark.anyio
async def test_a_refused_request_gives_its_tokens_back_without_teaching_the_ratio(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    charged = await rate.acquire(1000)
    rate.settle(charged, estimated=1000, used=0)
    assert rate.token_ratio == 1.0
    await rate.acquire(1000)
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_waiting_requests_leave_in_the_order_they_asked(clock: FakeClock) -> None:
    rate = limiter(clock, rpm=1)
    await rate.acquire()
    order: list[int] = []

    async def ask(number: int) -> None:
        await rate.acquire()
        order.append(number)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for number in range(5):
                group.start_soon(ask, number)
                await anyio.lowlevel.checkpoint()
    assert order == [0, 1, 2, 3, 4]
    assert clock.sleeps == [60.0] * 5


@pytest.mark.anyio
async def test_a_charge_of_unknown_outcome_is_kept(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=1000)
    charged = await rate.acquire(1000)
    rate.settle(charged, estimated=1000, used=None)  # timed out: the API may have counted it
    await rate.acquire(500)
    assert clock.sleeps == [pytest.approx(30.0)]


@pytest.mark.anyio
async def test_an_unsteady_estimate_keeps_headroom_for_its_spread(clock: FakeClock) -> None:
    rate = limiter(clock, tpm=6000)  # 100 tokens a second
    rate.settle(await rate.acquire(100), estimated=100, used=150)
    rate.settle(await rate.acquire(100), estimated=100, used=50)  # predicted 1.5x, was 0.5x
    assert rate.token_spread == pytest.approx(0.2)
    assert rate.token_ratio == pytest.approx(155 / 170)
    # 5800 left: enough for the 5471-token charge, but not with headroom of 2 spreads.
    assert await rate.acquire(6000) == 5471
    assert clock.sleeps == [pytest.approx(2.0)]  # waits for a full bucket (headroom is capped by it)
