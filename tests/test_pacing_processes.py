"""The shared pacer across real processes: several clients of one key against the loopback server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from providers.remote.pacing import PACER_FILE, SharedPacer
from tests.loopback_openai import LoopbackOpenAI

KEY = "sk-shared-key"
ROOT = Path(__file__).resolve().parent.parent


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pacing_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_sharing_a_key_stay_within_its_limits(tmp_path: Path, processes: int) -> None:
    # 40k tokens a (compressed) minute of one second; each process alone needs more than one.
    with LoopbackOpenAI(api_key=KEY, rpm=600, tpm=40_000, time_scale=60) as server:
        started = [
            child("embed", str(tmp_path), server.base_url, KEY, str(number * 200), "200") for number in range(processes)
        ]
        reports = [json.loads(finish(process)) for process in started]
        assert reports == [{"embedded": 200, "wrong": 0}] * processes
        assert server.tokens_served > processes * 40_000
        # The limits were learnt from the headers; every process then paced against one bucket.
        assert server.rate_limited_count <= max(1, 0.02 * server.request_count), server.status_counts


def test_limits_learnt_by_one_process_are_known_to_the_next(tmp_path: Path) -> None:
    with LoopbackOpenAI(api_key=KEY, rpm=500, tpm=90_000, time_scale=60) as server:
        finish(child("embed", str(tmp_path), server.base_url, KEY, "0", "3"))
        pacer = SharedPacer(tmp_path / PACER_FILE, server.base_url, KEY)
        assert (pacer.rpm, pacer.tpm) == (500, 90_000)
        pacer.close()


@pytest.mark.anyio
async def test_a_process_killed_while_waiting_holds_nothing(tmp_path: Path) -> None:
    endpoint = "http://pacing.test/v1"
    waiting = child("wait", str(tmp_path), endpoint, KEY)
    try:
        with anyio.fail_after(30):
            while not _waiters(tmp_path / PACER_FILE):  # it holds its turn in the queue
                assert waiting.poll() is None, waiting.communicate()[1]
                await anyio.sleep(0.05)
    finally:
        waiting.send_signal(signal.SIGKILL)
        waiting.communicate(timeout=10)
    pacer = SharedPacer(tmp_path / PACER_FILE, endpoint, KEY, tpm=6000)
    pacer.lease = 1.0
    started = time.monotonic()
    with anyio.fail_after(5):  # the dead waiter's turn would last a minute; its lease, a second
        await pacer.acquire(50, interactive=False)
    assert time.monotonic() - started < 3
    assert _waiters(tmp_path / PACER_FILE) == 0
    pacer.close()


def _waiters(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM pacer_waiters").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not there yet
            return 0
