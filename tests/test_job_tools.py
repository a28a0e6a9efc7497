"""The MCP job tools through a real `mcp.Client`: in memory, and over stdio across a kill -9."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ListRootsResult, Root

from providers import Settings
from providers.text.tokens import load_cl100k
from server import build_server
from server.tools.jobs import JobStatusResult

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
JOB_TOOLS = {"start_embedding_job", "job_status", "cancel_job", "list_jobs", "resume_job"}
CL100K = load_cl100k()
ANSWER_BUDGET = 2_000


@pytest.fixture
async def client(shared_data_dir: Path, project: Path) -> AsyncIterator[Client]:
    settings = Settings(data_dir=shared_data_dir, cache=False)
    async with Client(build_server(settings), read_timeout_seconds=120) as client:
        yield client


def write_chunks(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def answer_tokens(result: Any) -> int:
    assert CL100K is not None
    return len(CL100K.encode(json.dumps(result.structured_content)))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    if CL100K is not None:
        assert answer_tokens(result) <= ANSWER_BUDGET
    return result.structured_content  # type: ignore[no-any-return]


async def until_finished(client: Client, job_id: str) -> dict[str, Any]:
    with anyio.fail_after(120):
        while (status := await call(client, "job_status", job_id=job_id))["status"] in ("queued", "running"):
            await anyio.sleep(0.05)
    return status


async def test_the_job_tools_are_listed_with_titles_annotations_and_short_descriptions(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools if tool.name in JOB_TOOLS}
    assert set(tools) == JOB_TOOLS
    for tool in tools.values():
        assert tool.title and tool.annotations is not None and tool.description
        assert len(tool.description.splitlines()) <= 4
    assert tools["job_status"].annotations.read_only_hint is True  # type: ignore[union-attr]
    # Agent-facing: no outputSchema in tools/list (agents pay for it every turn); the answer's shape is the model's.
    assert tools["job_status"].output_schema is None
    assert set(JobStatusResult.model_fields) >= {
        *("job_id", "status", "done", "total", "cached", "tokens", "usd", "rate_per_min", "eta_s", "errors"),
    }


@pytest.mark.slow
async def test_a_local_job_starts_at_once_and_reports_progress_to_done(client: Client, project: Path) -> None:
    texts = [f"def function_{i}(x):\n    return x * {i}" for i in range(40)]
    long_text = " ".join(f"word{i}" for i in range(600))
    source = write_chunks(project / "chunks.jsonl", [*texts, long_text])
    started = await call(client, "start_embedding_job", input=str(source), output="vectors.npy")
    assert started["status"] == "queued" and started["total"] == 41
    assert started["estimated_tokens"] > 0 and started["estimated_usd"] == 0.0

    status = await until_finished(client, started["job_id"])
    assert (status["status"], status["done"], status["total"]) == ("done", 41, 41)
    assert status["truncated"] == 1 and any("were cut" in error for error in status["errors"])
    ids = (project / "vectors.ids.jsonl").read_text().splitlines()
    assert ids[:2] == ["0", "1"] and json.loads(ids[40])["truncated"] is True

    listed = await call(client, "list_jobs")
    assert listed["jobs"][0]["job_id"] == started["job_id"]


@pytest.mark.slow
async def test_answers_stay_within_the_token_budget_with_many_jobs_and_long_errors(
    client: Client, project: Path
) -> None:
    assert CL100K is not None, "cl100k_base is needed to measure the budget"
    source = write_chunks(project / "in.jsonl", ["x = 1", "y = 2"])
    repeated = project / "repeated.jsonl"
    repeated.write_text("".join(json.dumps({"id": "x" * 200, "text": f"t{i}"}) + "\n" for i in range(3)))
    for i in range(12):
        await call(client, "start_embedding_job", input=str(source if i % 2 else repeated), output=f"out{i}.jsonl")
    listed = await client.call_tool("list_jobs", {})
    assert len(listed.structured_content["jobs"]) == 10
    assert answer_tokens(listed) <= ANSWER_BUDGET


async def test_paths_outside_the_roots_are_a_tool_error_naming_the_path(
    client: Client, project: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.jsonl").write_text('{"id": 1, "text": "secret"}\n')
    result = await client.call_tool(
        "start_embedding_job", {"input": str(tmp_path / "secret.jsonl"), "output": "o.jsonl"}
    )
    assert result.is_error and "outside the allowed directories" in result.content[0].text  # type: ignore[union-attr]
    result = await client.call_tool("job_status", {"job_id": "nope"})
    assert result.is_error and "no job 'nope'" in result.content[0].text  # type: ignore[union-attr]


async def test_the_clients_mcp_roots_narrow_where_jobs_may_read(shared_data_dir: Path, project: Path) -> None:
    (project / "allowed").mkdir()
    source = write_chunks(project / "in.jsonl", ["x = 1"])

    async def list_roots(_: object) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=(project / "allowed").as_uri())])  # type: ignore[arg-type]

    server = build_server(Settings(data_dir=shared_data_dir, cache=False))
    async with Client(server, mode="legacy", list_roots_callback=list_roots) as client:
        refused = await client.call_tool("start_embedding_job", {"input": str(source), "output": "o.jsonl"})
        assert refused.is_error and "outside the allowed directories" in refused.content[0].text  # type: ignore[union-attr]
        inside = write_chunks(project / "allowed" / "in.jsonl", ["x = 1"])
        started = await call(client, "start_embedding_job", input=str(inside), output="o.jsonl", format="jsonl")
        assert started["output"] == str((project / "allowed" / "o.jsonl").resolve())
        await call(client, "cancel_job", job_id=started["job_id"])
        assert (await until_finished(client, started["job_id"]))["status"] == "cancelled"


# --- over stdio, across a kill -9 --------------------------------------------------------------------


def server_params(data_dir: Path, project: Path) -> StdioServerParameters:
    env = {"HF_HUB_OFFLINE": "1", "SIGNAL_HUB_DATA_DIR": str(data_dir), "SIGNAL_HUB_JOB_ROOTS": str(project)}
    return StdioServerParameters(command=sys.executable, args=["-m", "server"], env=env, cwd=ROOT)


def server_pid(data_dir: Path, job_id: str) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        owner = db.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    return int(owner.split(":")[1])


@pytest.mark.slow
async def test_a_local_job_killed_with_the_server_resumes_by_itself_in_the_next_and_sends_only_the_rest(
    data_dir: Path, project: Path
) -> None:
    texts = [f"def function_{i}(x):\n    return x * {i} + {i % 7}" for i in range(600)]
    source = write_chunks(project / "chunks.jsonl", texts)
    params = server_params(data_dir, project)
    with anyio.fail_after(240):
        async with Client(params, mode="legacy", read_timeout_seconds=120) as client:
            started = await call(client, "start_embedding_job", input=str(source), output="out.jsonl")
            job_id = started["job_id"]
            while (await call(client, "job_status", job_id=job_id))["done"] < 32:
                await anyio.sleep(0.01)
            os.kill(server_pid(data_dir, job_id), signal.SIGKILL)
        assert not (project / "out.jsonl").exists()
        done_before = saved_done(data_dir, job_id)
        assert 32 <= done_before < 600

        # "Start indexing, close the session, open a new one": the free local job goes on by itself.
        async with Client(params, mode="legacy", read_timeout_seconds=120) as client:
            while (await call(client, "job_status", job_id=job_id))["status"] == "interrupted":
                await anyio.sleep(0.05)  # until the new server has resumed it (bounded by the fail_after)
            after = await until_finished(client, job_id)
    assert after["status"] == "done" and after["done"] == 600
    assert after["cached"] >= done_before  # the work done before the kill came from the cache
    rows = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == list(range(600))


def saved_done(data_dir: Path, job_id: str) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return int(db.execute("SELECT done FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])


async def test_job_status_says_whether_an_interrupted_job_resumes_by_itself(
    shared_data_dir: Path, project: Path
) -> None:
    from providers.jobs.store import JobStore

    store = JobStore(shared_data_dir / "jobs.sqlite3")
    ids = {}
    for provider, model in (("openai", "text-embedding-3-small"), ("local", "all-MiniLM-L6-v2")):
        job = store.create(
            input=str(project / "gone.jsonl"), output=str(project / "o.jsonl"), format="jsonl", glob="*",
            provider=provider, model=model, space="s", fingerprint="f", total=1,
        )  # fmt: skip
        store.finish(job.id, "interrupted")
        ids[provider] = job.id
    store.close()
    async with Client(build_server(Settings(data_dir=shared_data_dir, cache=False))) as client:
        paid = await client.call_tool("job_status", {"job_id": ids["openai"]})
        free = await client.call_tool("job_status", {"job_id": ids["local"]})
    assert paid.structured_content["status"] == "interrupted"
    assert "waits for resume_job (a paid provider's job never resumes by itself)" in paid.content[0].text  # type: ignore[union-attr]
    # Its input is gone, so it could not resume at this server's start: it says what would happen.
    assert free.structured_content["status"] == "interrupted"
    assert free.structured_content["next_step"].startswith("resumes by itself when a server starts")
