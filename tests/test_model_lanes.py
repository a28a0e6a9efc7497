"""The local model's lanes: short calls first, long calls in turns, and model calls that never wait for the loop.

The lanes are scheduling logic, so most tests give them a deterministic stand-in for the model
(a window's vector is its first token id); tests/test_local.py runs them with the real model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Awaitable, Callable

import anyio
import numpy as np
import pytest

from providers.errors import ProviderError
from providers.local_model.lanes import ModelLanes

pytestmark = pytest.mark.anyio

_WAIT_S = 30


class Model:
    """Records each model call's first window id; `hold()` makes the next call wait until `release()`."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.held = threading.Event()
        self._gate: threading.Event | None = None
        self.reached = threading.Condition()
        self.waiting_when_held = 0

    def hold(self) -> None:
        self._gate = threading.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    def __call__(self, windows: list[list[int]]) -> np.ndarray:
        gate = self._gate
        if gate is not None and not self.held.is_set():
            self.held.set()
            assert gate.wait(_WAIT_S)
        with self.reached:
            self.calls.append(windows[0][0])
            self.reached.notify_all()
        return np.array([[float(window[0]), 1.0] for window in windows], dtype=np.float32)

    def wait_for_calls(self, count: int) -> bool:
        with self.reached:
            return self.reached.wait_for(lambda: len(self.calls) >= count, timeout=_WAIT_S)


def windows(first: int, count: int) -> list[list[int]]:
    return [[first + i, 7, 7] for i in range(count)]


async def collect(lanes: ModelLanes, wanted: list[list[int]], short: bool) -> list[tuple[list[int], np.ndarray]]:
    async with contextlib.aclosing(lanes.run(wanted, short=short)) as pieces:
        return [piece async for piece in pieces]


async def one_call(lanes: ModelLanes, wanted: list[list[int]], short: bool) -> list[tuple[list[int], np.ndarray]]:
    """One call's pieces, bounded; the lanes are closed after."""
    try:
        with anyio.fail_after(_WAIT_S):
            return await collect(lanes, wanted, short)
    finally:
        lanes.close()


async def while_held(
    lanes: ModelLanes, model: Model, first: Callable[[], Awaitable[object]], then: Callable[[], Awaitable[object]]
) -> None:
    """`first` runs until its first model call is held; `then` starts and waits (`model.waiting_when_held`:
    the calls the lanes had waiting then); the model is released. Bounded; the lanes are closed after."""
    model.hold()
    try:
        with anyio.fail_after(_WAIT_S):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(first)
                assert await anyio.to_thread.run_sync(model.held.wait, _WAIT_S)
                tasks.start_soon(then)
                await anyio.wait_all_tasks_blocked()
                model.waiting_when_held = lanes.waiting
                model.release()
    finally:
        lanes.close()


async def test_pieces_come_a_step_at_a_time_with_their_vectors_in_place() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=2, batch_size=3, step=8, turn=64)
    pieces = await one_call(lanes, windows(100, 20), False)
    assert [len(positions) for positions, _ in pieces] == [8, 8, 4]
    for positions, vectors in pieces:
        assert vectors[:, 0].tolist() == [100 + p for p in positions]
    assert sorted(p for positions, _ in pieces for p in positions) == list(range(20))
    assert lanes.calls == 7  # 20 windows in calls of 3


async def test_a_short_call_waits_for_the_model_call_in_progress_not_for_a_step() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=1, batch_size=1, step=8, turn=64)
    long_call = functools.partial(collect, lanes, windows(100, 20), False)
    await while_held(lanes, model, long_call, functools.partial(collect, lanes, windows(900, 1), True))
    assert model.waiting_when_held == 2
    assert model.calls[:3] == [100, 900, 101]


async def test_long_calls_take_turns_of_up_to_a_turn_of_windows() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=1, batch_size=1, step=2, turn=4)
    long_call = functools.partial(collect, lanes, windows(100, 10), False)
    await while_held(lanes, model, long_call, functools.partial(collect, lanes, windows(200, 6), False))
    assert model.calls == [100, 101, 102, 103, 200, 201, 202, 203, 104, 105, 106, 107, 204, 205, 108, 109]


async def test_batches_sent_together_that_fit_in_a_turn_end_one_after_another() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=1, batch_size=1, step=2, turn=16)
    ended: list[str] = []

    async def batch(name: str, first: int) -> None:
        await collect(lanes, windows(first, 10), False)
        ended.append(name)

    await while_held(lanes, model, functools.partial(batch, "a", 100), functools.partial(batch, "b", 200))
    assert model.calls == [*range(100, 110), *range(200, 210)] and ended == ["a", "b"]


async def test_the_model_keeps_working_while_the_event_loop_is_busy() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=1, batch_size=1, step=8, turn=64)
    try:
        with anyio.fail_after(_WAIT_S):
            async with anyio.create_task_group() as tasks:
                results: list[list[tuple[list[int], np.ndarray]]] = []

                async def run() -> None:
                    results.append(await collect(lanes, windows(100, 24), False))

                tasks.start_soon(run)
                await anyio.wait_all_tasks_blocked()
                # The loop is blocked here, so nobody takes the first step's vectors: the lane goes on.
                assert model.wait_for_calls(24)
    finally:
        lanes.close()
    assert [len(positions) for positions, _ in results[0]] == [8, 8, 8]


async def test_two_lanes_run_two_model_calls_at_once() -> None:
    both = threading.Barrier(2, timeout=_WAIT_S)

    def model(windows: list[list[int]]) -> np.ndarray:
        if windows[0][0] in (100, 101):
            both.wait()  # broken (an error) unless the two calls are in flight together
        return np.ones((len(windows), 2), dtype=np.float32)

    lanes = ModelLanes(model, lanes=2, batch_size=1, step=8, turn=64)
    pieces = await one_call(lanes, windows(100, 4), True)
    assert sum(len(positions) for positions, _ in pieces) == 4


async def test_a_failing_model_call_fails_its_call_and_the_lanes_serve_the_next() -> None:
    def model(windows: list[list[int]]) -> np.ndarray:
        if windows[0][0] == 13:
            raise RuntimeError("the runtime failed")
        return np.ones((len(windows), 2), dtype=np.float32)

    lanes = ModelLanes(model, lanes=1, batch_size=1, step=8, turn=64)
    try:
        with anyio.fail_after(_WAIT_S):
            with pytest.raises(RuntimeError, match="the runtime failed"):
                await collect(lanes, windows(10, 8), False)
            assert sum(len(p) for p, _ in await collect(lanes, windows(20, 3), True)) == 3
    finally:
        lanes.close()
    assert lanes.waiting == 0


async def test_a_cancelled_call_gives_up_the_windows_no_lane_took() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=1, batch_size=1, step=8, turn=64)
    model.hold()
    try:
        with anyio.fail_after(_WAIT_S):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(collect, lanes, windows(100, 50), False)
                    assert await anyio.to_thread.run_sync(model.held.wait, _WAIT_S)
                    scope.cancel()
            assert lanes.waiting == 0
            model.release()
            await collect(lanes, windows(900, 1), True)
    finally:
        lanes.close()
    assert model.calls == [100, 900]  # the call in progress ended; the other 49 windows were never run


async def test_closing_tells_the_waiting_calls_and_refuses_new_ones() -> None:
    model = Model()
    lanes = ModelLanes(model, lanes=1, batch_size=1, step=8, turn=64)
    model.hold()
    errors: list[BaseException] = []

    async def waiting() -> None:
        try:
            await collect(lanes, windows(200, 3), False)
        except ProviderError as exc:
            errors.append(exc)

    with anyio.fail_after(_WAIT_S):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(collect, lanes, windows(100, 1), True)
            assert await anyio.to_thread.run_sync(model.held.wait, _WAIT_S)
            tasks.start_soon(waiting)
            await anyio.wait_all_tasks_blocked()
            lanes.close()
            model.release()
        with pytest.raises(ProviderError, match="closed"):
            await collect(lanes, windows(300, 1), True)
    assert len(errors) == 1 and "closed while this call waited" in str(errors[0])


idle_priority = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")


async def long_then_short(lanes: ModelLanes, long_windows: int, short_windows: int) -> None:
    """A long call (windows from 100), then a short one (from 900); the lanes are closed after."""
    try:
        with anyio.fail_after(_WAIT_S):
            await collect(lanes, windows(100, long_windows), False)
            await collect(lanes, windows(900, short_windows), True)
    finally:
        lanes.close()


@idle_priority
async def test_in_the_background_long_calls_run_at_idle_priority_and_short_calls_at_normal() -> None:
    policies: dict[int, int] = {}

    def model(windows: list[list[int]]) -> np.ndarray:
        policies[windows[0][0]] = os.sched_getscheduler(0)
        return np.ones((len(windows), 2), dtype=np.float32)

    lanes = ModelLanes(model, lanes=2, batch_size=1, step=8, background=True)
    await long_then_short(lanes, 20, 3)
    assert lanes.background
    assert {policies[i] for i in range(100, 120)} == {os.SCHED_IDLE}
    assert {policies[i] for i in range(900, 903)} == {os.SCHED_OTHER}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is left as it was


@idle_priority
async def test_in_the_background_a_short_call_has_lanes_of_its_own_while_every_long_lane_is_busy() -> None:
    long_lanes_busy = threading.Barrier(3, timeout=_WAIT_S)  # both long lanes and this test
    release = threading.Event()

    def model(windows: list[list[int]]) -> np.ndarray:
        if windows[0][0] in (100, 101):
            long_lanes_busy.wait()
            assert release.wait(_WAIT_S)
        return np.ones((len(windows), 2), dtype=np.float32)

    lanes = ModelLanes(model, lanes=2, batch_size=1, step=8, background=True)
    try:
        with anyio.fail_after(_WAIT_S):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(collect, lanes, windows(100, 4), False)
                await anyio.to_thread.run_sync(long_lanes_busy.wait)
                short = await collect(lanes, windows(900, 2), True)  # would wait for `release` on a long lane
                release.set()
    finally:
        release.set()
        lanes.close()
    assert sum(len(positions) for positions, _ in short) == 2


async def test_without_the_background_every_lane_serves_both_kinds_of_call_at_normal_priority() -> None:
    names: set[str] = set()

    def model(windows: list[list[int]]) -> np.ndarray:
        names.add(threading.current_thread().name)
        if hasattr(os, "sched_getscheduler"):
            assert os.sched_getscheduler(0) == os.SCHED_OTHER
        return np.ones((len(windows), 2), dtype=np.float32)

    lanes = ModelLanes(model, lanes=1, batch_size=1, step=8)
    await long_then_short(lanes, 4, 1)
    assert not lanes.background and names == {"local-model-any-0"}
