"""kill -9 of a real server process in the middle of an OpenAI call loses nothing that was billed.

Each request is recorded in the ledger and its vectors cached as it completes, so after a
restart `get_cost(scope="all")` shows what the API billed, and a rerun sends only the rest.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from providers import EmbeddingService, Settings
from tests.loopback_openai import LoopbackOpenAI, count_tokens
from tests.test_openai_provider import KEY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"def handler_{i}(event): return event.id * {i} + {i % 7}" for i in range(400)]
PER_REQUEST = 10


def ledger_totals(data_dir: Path) -> tuple[int, int]:
    """Requests and tokens the ledger holds, read as another process would."""
    path = data_dir / "ledger.sqlite3"
    if not path.exists():
        return 0, 0
    with sqlite3.connect(path, timeout=5) as db:
        requests, tokens = db.execute(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(tokens), 0) FROM calls"
        ).fetchone()
    return int(requests), int(tokens)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def send(process: subprocess.Popen[bytes], message: dict[str, object]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()


def test_kill_9_mid_call_keeps_what_was_billed_and_a_rerun_sends_only_the_rest(data_dir: Path) -> None:
    with LoopbackOpenAI(api_key=KEY, latency=0.05) as server:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "SIGNAL_HUB_DATA_DIR": str(data_dir),
            "SIGNAL_HUB_PROVIDER": "openai",
            "SIGNAL_HUB_FALLBACK": "never",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": server.base_url,
            "SIGNAL_HUB_OPENAI_MAX_INPUTS": str(PER_REQUEST),
            "SIGNAL_HUB_OPENAI_CONCURRENCY": "1",  # one request in flight: the kill point is exact
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            send(
                process,
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "kill-test", "version": "0"},
                    },
                },
            )
            assert process.stdout is not None
            assert b'"id":1' in process.stdout.readline().replace(b" ", b"")
            send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            arguments = {"texts": TEXTS, "encoding": "base64"}
            send(
                process,
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "embed_batch", "arguments": arguments},
                },
            )
            requests = len(TEXTS) // PER_REQUEST
            wait_for(lambda: ledger_totals(data_dir)[0] >= requests * 0.3, 60, "30% of the requests in the ledger")
            server.inject("hang")  # the next request gets no answer: nothing more is billed
            wait_for(lambda: any(r.fault == "hang" for r in server.requests), 10, "a request to hang")
            billed = server.status_counts.get(200, 0)
            wait_for(lambda: ledger_totals(data_dir)[0] == billed, 10, "the last billed request in the ledger")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        assert 0.3 * requests <= billed < requests
        billed_texts = set(server.embedded_inputs())
        billed_tokens = server.tokens_served

        async def restart() -> tuple[int, int, float, int]:
            settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(("SIGNAL_HUB", "OPENAI"))})
            async with EmbeddingService(settings=settings) as service:
                report = service.cost_report(scope="all")
                server.reset_counters()
                with anyio.fail_after(60):
                    again = await service.embed(TEXTS)
                return report.total.tokens, report.total.requests, report.total_usd, again.cached

        tokens, recorded_requests, usd, cached = anyio.run(restart)
    assert (tokens, recorded_requests) == (billed_tokens, billed)
    assert usd == pytest.approx(billed_tokens * 0.02 / 1e6)
    assert cached == len(billed_texts) == billed * PER_REQUEST
    resent = server.embedded_inputs()
    assert len(resent) == len(TEXTS) - len(billed_texts) and not billed_texts & set(resent)
    assert server.tokens_served == sum(count_tokens(t) for t in TEXTS) - billed_tokens
