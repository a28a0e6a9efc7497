"""The HTTP server as a real process: jobs belong to a token, outlive their client, and SIGTERM stops cleanly.

Every stop here is a real signal to a real `signal-hub-embeddings serve --transport http` process
(`tests/http_server.py`); the job store and ledger it leaves behind are then read directly.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import anyio
import pytest

from providers.jobs.store import JobStore
from tests.http_server import HttpServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef"}


def write_chunks(path: Path, count: int) -> Path:
    lines = (json.dumps({"id": i, "text": f"def chunk_{i}(x):\n    return x + {i} * {i % 7}\n"}) for i in range(count))
    path.write_text("\n".join(lines) + "\n")
    return path


def reservations(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "ledger.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])


async def wait_until_running(client: object, job_id: str) -> dict[str, object]:
    with anyio.fail_after(180):
        while True:
            status = (await client.call_tool("job_status", {"job_id": job_id})).structured_content  # type: ignore[attr-defined]
            if status["status"] == "running" and status["done"] > 0:
                return dict(status)
            await anyio.sleep(0.1)


async def test_a_job_is_its_tokens_and_survives_its_client_and_sigterm_leaves_it_interrupted(
    data_dir: Path, project: Path
) -> None:
    source = write_chunks(project / "chunks.jsonl", 3000)
    with HttpServer(data_dir, tokens=TOKENS, env={"SIGNAL_HUB_JOB_ROOTS": str(project)}) as server:
        async with server.client("alice") as alice:
            started = await alice.call_tool("start_embedding_job", {"input": str(source), "output": "out.jsonl"})
            assert not started.is_error, started.content
            job_id = started.structured_content["job_id"]
        # alice's client is gone; the job runs on in the server
        async with server.client("alice") as alice_again, server.client("bob") as bob:
            await wait_until_running(alice_again, job_id)
            watched = await bob.call_tool("job_status", {"job_id": job_id})
            assert watched.is_error and f"no job '{job_id}'" in watched.content[0].text  # type: ignore[union-attr]
            assert (await bob.call_tool("cancel_job", {"job_id": job_id})).is_error
            assert (await bob.call_tool("list_jobs", {})).structured_content["jobs"] == []
            mine = (await alice_again.call_tool("list_jobs", {})).structured_content["jobs"]
            assert [job["job_id"] for job in mine] == [job_id]
        status = server.stop(signal.SIGTERM)
        said = server.stderr
    assert status == 0 and "Traceback" not in said
    store = JobStore(data_dir / "jobs.sqlite3")
    try:
        job = store.get(job_id)
        assert job is not None and job.status == "interrupted" and job.client == "alice"
        assert 0 < job.done < job.total
    finally:
        store.close()
    assert reservations(data_dir) == 0


async def test_sigterm_during_a_call_lets_it_finish_then_exits_0(data_dir: Path) -> None:
    texts = [f"class Thing{i}:\n    def method(self):\n        return {i}\n" for i in range(400)]
    with HttpServer(data_dir, env={"SIGNAL_HUB_HTTP_GRACE_S": "120"}) as server:
        progressed = anyio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progressed.set()

        async with server.client(None) as client:
            await client.list_tools()  # the client checks answers against output schemas: have them first
            async with anyio.create_task_group() as tasks:
                result: dict[str, object] = {}

                async def call() -> None:
                    arguments = {"texts": texts, "include_vectors": False}
                    answer = await client.call_tool("embed_batch", arguments, progress_callback=on_progress)
                    result.update(answer.structured_content or {"error": answer.content})

                tasks.start_soon(call)
                with anyio.fail_after(180):
                    await progressed.wait()  # the call is in flight, the model at work
                server.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]  # as a host sends both
                server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        status = server.stop(timeout_s=180)
        said = server.stderr
    assert result.get("count") == 400
    assert status == 0 and "Traceback" not in said
    assert reservations(data_dir) == 0
