"""Directory jobs over MCP (a real `mcp.Client` in memory, the packaged local model).

The files worth embedding in syntax chunks, `glob`/`exclude`, a dry run that sends nothing, and a
rerun that embeds only what changed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from providers import Settings
from server import build_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(data_dir: Path, project: Path) -> AsyncIterator[Client]:
    # No cache: what a rerun does not embed again can only come from the last output.
    async with Client(build_server(Settings(data_dir=data_dir, cache=False)), read_timeout_seconds=120) as client:
        yield client


def function(name: str, body: str = "return value") -> str:
    return f"def {name}(value):\n    '''Compute {name}.'''\n    {body}\n"


def make_tree(root: Path) -> None:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "vendor").mkdir()
    (root / "pkg" / "a.py").write_text(function("alpha"))
    (root / "pkg" / "b.py").write_text(function("beta"))
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00")
    (root / "vendor" / "v.py").write_text("\n\n".join(function(f"v{i}") for i in range(12)))
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    (root / "notes.md").write_text("# Notes\n\nAbout the tree.\n")


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result


async def until_finished(client: Client, job_id: str) -> dict[str, Any]:
    with anyio.fail_after(180):
        while (status := (await call(client, "job_status", job_id=job_id)).structured_content)["status"] in (
            "queued",
            "running",
        ):
            await anyio.sleep(0.05)
    return status  # type: ignore[no-any-return]


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_dry_run_reports_what_the_job_would_embed_and_queues_and_sends_nothing(
    client: Client, project: Path
) -> None:
    make_tree(project / "tree")
    result = await call(client, "start_embedding_job", input="tree", output="out.jsonl", dry_run=True)
    report = result.structured_content
    assert report["dry_run"] is True and report["provider"] == "local" and report["usd"] == 0
    assert report["files"] == 4 and report["chunks"] == report["to_embed"] >= 4
    assert report["top_directories"][0]["directory"] == "vendor/"
    assert report["skipped"] == {"binary": 1, "build or vendored directory": 1}
    assert report["chunk_tokens"] == 256  # the packaged model's window
    assert "nothing sent" in result.content[0].text
    assert (await call(client, "list_jobs")).structured_content["jobs"] == []
    assert not (project / "out.jsonl").exists()


async def test_glob_and_exclude_narrow_a_directory_job_and_binary_files_are_skipped_not_refused(
    client: Client, project: Path
) -> None:
    make_tree(project / "tree")
    result = await call(
        client,
        "start_embedding_job",
        input="tree",
        output="out.jsonl",
        glob=["*.py"],
        exclude=["vendor/"],
        dry_run=True,
    )
    assert result.structured_content["files"] == 2
    assert result.structured_content["skipped"]["excluded"] == 1


@pytest.mark.slow
async def test_a_rerun_embeds_only_what_changed_and_job_status_counts_the_changes(
    client: Client, project: Path
) -> None:
    tree = project / "tree"
    make_tree(tree)
    started = (await call(client, "start_embedding_job", input="tree", output="out.jsonl")).structured_content
    first = await until_finished(client, started["job_id"])
    assert first["status"] == "done" and first["errors"] == []
    assert first["changes"]["files_added"] == 4 and first["changes"]["skipped"]["binary"] == 1
    before = {row["id"]: row for row in rows(project / "out.jsonl")}
    assert {row["path"] for row in before.values()} == {"pkg/a.py", "pkg/b.py", "vendor/v.py", "notes.md"}
    assert before["pkg/a.py:1-3"]["symbol"] == "alpha" and before["pkg/a.py:1-3"]["language"] == "python"

    (tree / "pkg" / "a.py").write_text(function("alpha", "return value + 1"))
    (tree / "pkg" / "b.py").unlink()
    (tree / "pkg" / "c.py").write_text(function("gamma"))
    again = (await call(client, "start_embedding_job", input="tree", output="out.jsonl")).structured_content
    status = await until_finished(client, again["job_id"])
    assert status["status"] == "done"
    changes = status["changes"]
    assert {key: changes[key] for key in ("files_added", "files_changed", "files_removed", "files_unchanged")} == {
        "files_added": 1,
        "files_changed": 1,
        "files_removed": 1,
        "files_unchanged": 2,
    }
    after = {row["id"]: row for row in rows(project / "out.jsonl")}
    assert {row["path"] for row in after.values()} == {"pkg/a.py", "pkg/c.py", "vendor/v.py", "notes.md"}
    assert status["cached"] == len(after) - 2  # every row but a.py's and c.py's came from the last output
    unchanged = [chunk_id for chunk_id in after if after[chunk_id]["path"] == "vendor/v.py"]
    assert unchanged and all(after[i]["embedding"] == before[i]["embedding"] for i in unchanged)
