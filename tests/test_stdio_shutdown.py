"""A host closing a session, as a real process sees it: Claude Code sends SIGINT and, 100 ms later,
SIGTERM; a terminal's Ctrl-C sends SIGINT alone; a host may only close stdin."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.storage.cache import EmbeddingCache
from tests.stdio_process import START_S, RawServer, server_env

pytestmark = pytest.mark.slow

EXIT_S = 30.0  # a clean stop takes about the 2 s grace; the bound only stops a hung test
CHUNKS = 4000


@pytest.fixture
def chunks(project: Path) -> Path:
    path = project / "chunks.jsonl"
    texts = (f"def function_{i}(items):\n    return sum(x * {i} for x in items) + {i % 13}" for i in range(CHUNKS))
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture
def servers(data_dir: Path, project: Path) -> Iterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        server.close()


def start(servers: list[RawServer], data_dir: Path, project: Path) -> RawServer:
    server = RawServer(server_env(data_dir, SIGNAL_HUB_JOB_ROOTS=str(project)))
    servers.append(server)
    server.initialize()
    return server


def job_status(server: RawServer, request_id: int, job_id: str) -> dict[str, Any]:
    answer = server.call(request_id, "job_status", job_id=job_id)
    return answer["result"]["structuredContent"]  # type: ignore[no-any-return]


def wait_for_progress(server: RawServer, job_id: str, field: str, at_least: int) -> dict[str, Any]:
    for request_id in range(1000, 100_000):  # each answer comes within ANSWER_S; the model loads first
        status = job_status(server, request_id, job_id)
        if status[field] >= at_least:
            return status
        threading.Event().wait(0.02)  # a poll interval for a real process, not a timing assumption
    raise AssertionError(f"the job never reached {field} >= {at_least}")


def stored_job(data_dir: Path, job_id: str) -> tuple[str, int]:
    """The job's status and `done` as its server left them in the job store."""
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        status, done = db.execute("SELECT status, done FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return str(status), int(done)


def reservations(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "ledger.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])


def assert_clean_exit(server: RawServer) -> str:
    status = server.wait(EXIT_S)
    stderr = server.stderr_text()
    assert status == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    return stderr


def test_sigint_then_sigterm_answers_the_call_in_flight_checkpoints_the_job_and_exits_0(
    servers: list[RawServer], data_dir: Path, project: Path, chunks: Path
) -> None:
    server = start(servers, data_dir, project)
    assert "result" in server.call(9, "embed_text", timeout=START_S, text="the model is loaded")
    started = server.call(2, "start_embedding_job", timeout=START_S, input=str(chunks), output="out.jsonl")
    job_id = started["result"]["structuredContent"]["job_id"]
    wait_for_progress(server, job_id, "done", 32)

    texts = [f"in flight {i}" for i in range(48)]
    server.request(3, "tools/call", {"name": "embed_batch", "arguments": {"texts": texts}})
    server.request(4, "ping", {})  # answered at once, so the server has read the call before it
    answers = [server.answer()]
    server.signal(signal.SIGINT)
    threading.Event().wait(0.1)  # the host's own 100 ms between the two signals
    server.signal(signal.SIGTERM)

    if answers[0]["id"] == 4:
        answers.append(server.answer(timeout=EXIT_S))  # the call in flight is answered, not dropped
    call = next(answer for answer in answers if answer["id"] == 3)
    assert call["result"]["structuredContent"]["count"] == 48, call
    stderr = assert_clean_exit(server)
    assert "stopping (SIGINT)" in stderr and "stopped" in stderr

    assert reservations(data_dir) == 0
    status, done = stored_job(data_dir, job_id)
    assert status == "interrupted" and 32 <= done < CHUNKS
    cache = EmbeddingCache(data_dir / "cache.sqlite3")
    try:
        assert cache.stats().entries >= done  # what it finished is kept
    finally:
        cache.close()
    assert not (project / "out.jsonl").exists()
    kept = (project / "out.jsonl.partial").read_bytes().splitlines(keepends=True)
    assert len(kept) >= done and all(row.endswith(b"}\n") for row in kept)  # for the resume to go on after

    # A resume goes on after the rows kept (they count as cached). (A free provider's job may
    # resume by itself when the next server starts.)
    after = start(servers, data_dir, project)
    if job_status(after, 2, job_id)["status"] == "interrupted":
        answer = after.call(3, "resume_job", job_id=job_id)["result"]
        # The free job may have resumed by itself between the two calls: then resume_job refuses.
        if not answer.get("isError"):
            assert answer["structuredContent"]["status"] in ("queued", "running")
    assert wait_for_progress(after, job_id, "cached", done)["cached"] >= done


def test_sigint_alone_during_a_job_stops_the_server_while_stdin_stays_open(
    servers: list[RawServer], data_dir: Path, project: Path, chunks: Path
) -> None:
    server = start(servers, data_dir, project)
    started = server.call(2, "start_embedding_job", timeout=START_S, input=str(chunks), output="out.jsonl")
    job_id = started["result"]["structuredContent"]["job_id"]
    wait_for_progress(server, job_id, "done", 16)

    server.signal(signal.SIGINT)  # Ctrl-C in a terminal: stdin is never closed
    server.stderr_line("stopping (SIGINT)", timeout=EXIT_S)
    server.signal(signal.SIGINT)  # and a second, impatient one: still no traceback
    assert_clean_exit(server)
    assert reservations(data_dir) == 0
    assert stored_job(data_dir, job_id)[0] == "interrupted"


def test_stdin_closing_lets_the_call_in_flight_answer_and_exits_0(servers: list[RawServer], data_dir: Path) -> None:
    server = RawServer(server_env(data_dir))
    servers.append(server)
    server.initialize()
    assert "result" in server.call(9, "embed_text", timeout=START_S, text="the model is loaded")
    server.request(2, "tools/call", {"name": "embed_batch", "arguments": {"texts": [f"text {i}" for i in range(16)]}})
    assert server.process.stdin is not None
    server.process.stdin.close()  # the host is gone; its last call still gets its answer

    answer = server.answer(timeout=START_S)
    assert answer["id"] == 2 and answer["result"]["structuredContent"]["count"] == 16, answer
    assert "stopping (stdin closed)" in assert_clean_exit(server)
