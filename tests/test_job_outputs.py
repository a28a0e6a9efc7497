"""Where a job may write (issue 24 #1) and paths swapped after a job starts (#11).

Through the real runner over deterministic fake providers (tests/test_jobs.py), through a real MCP
client for the case as the issue tells it, and through the `embed` command.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client

from providers import InputError, Settings
from providers.jobs.outputs import is_job_output
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from server import build_server
from server.cli import main
from tests.test_jobs import GatedProvider, jsonl_rows, providers, runner, service, write_chunks

__all__ = ["providers", "runner", "service"]  # fixtures, imported for pytest

pytestmark = pytest.mark.anyio


@pytest.fixture
def tree(project: Path) -> Path:
    (project / "src").mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (project / "src" / name).write_text(f"# {name}\nx = 1\n")
    (project / "notes.txt").write_text("my notes\n")
    return project


@pytest.fixture
async def client(tree: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    monkeypatch.chdir(tree)
    # The data directory under the roots, as in the issue.
    settings = Settings(data_dir=tree / "data", cache=False)
    async with Client(build_server(settings), read_timeout_seconds=120) as client:
        yield client


async def refusal(client: Client, **arguments: object) -> str:
    result = await client.call_tool("start_embedding_job", arguments)
    assert result.is_error, result.structured_content
    return result.content[0].text  # type: ignore[union-attr]


async def test_an_output_over_its_own_input_or_another_file_is_refused(client: Client, tree: Path) -> None:
    assert "is inside the input directory" in await refusal(client, input="src", output="src/a.py")
    assert "is inside the input directory" in await refusal(client, input="src", output="src/new.jsonl")
    assert "notes.txt exists; choose another output, or pass overwrite: true" in await refusal(
        client, input="src", output="notes.txt"
    )
    even = await refusal(client, input="src", output="notes.txt", overwrite=True)
    assert "was not written by a job" in even and "never replaced, even with overwrite: true" in even
    ledger = tree / "data" / "ledger.sqlite3"
    assert ledger.exists()
    assert "inside the data directory" in await refusal(client, input="src", output=str(ledger), overwrite=True)
    assert (tree / "src" / "a.py").read_text() == "# a.py\nx = 1\n"
    assert (tree / "notes.txt").read_text() == "my notes\n"
    assert (await client.call_tool("list_jobs", {})).structured_content["jobs"] == []  # nothing was queued


async def test_overwrite_replaces_a_jobs_own_output_and_without_it_is_refused(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    providers["fake"].gate.set()
    source = write_chunks(tmp_path / "in.jsonl", 3)
    first = await runner.start(str(source), "out.jsonl")
    with anyio.fail_after(10):
        assert (await runner.wait(first.job.id)).status == "done"
    with pytest.raises(InputError, match=re.escape("out.jsonl exists; choose another output, or pass overwrite: true")):
        await runner.start(str(source), "out.jsonl")
    write_chunks(source, 4)
    again = await runner.start(str(source), "out.jsonl", overwrite=True)
    with anyio.fail_after(10):
        assert (await runner.wait(again.job.id)).status == "done"
    assert len(jsonl_rows(tmp_path / "out.jsonl")) == 4


def test_a_jobs_outputs_are_told_from_other_files(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"id": 1, "embedding": [0.5], "space": "s", "truncated": False, "dropped_tokens": 0}) + "\n"
    )
    chunks = write_chunks(tmp_path / "chunks.jsonl", 2)
    assert is_job_output(rows, "jsonl") and not is_job_output(chunks, "jsonl")
    np.save(tmp_path / "v.npy", np.zeros((2, 4), dtype="<f4"))
    assert not is_job_output(tmp_path / "v.npy", "npy")  # without its ids beside it
    (tmp_path / "v.ids.jsonl").write_text("1\n2\n")
    assert is_job_output(tmp_path / "v.npy", "npy") and is_job_output(
        tmp_path / "v.ids.jsonl", "npy", tmp_path / "v.npy"
    )
    np.save(tmp_path / "w.npy", np.zeros((2, 4), dtype="<f8"))
    (tmp_path / "w.ids.jsonl").write_text("1\n2\n")
    assert not is_job_output(tmp_path / "w.npy", "npy")  # float64: not ours
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    assert not is_job_output(tmp_path / "x.npy", "npy")


def test_the_embed_command_refuses_an_existing_output_unless_overwrite_and_never_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIGNAL_HUB_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a = 1")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["embed", str(tmp_path / "src"), "-o", str(notes), "--overwrite"]) == 2
    assert "was not written by a job" in capsys.readouterr().err and notes.read_text() == "mine"
    assert main(["embed", str(tmp_path / "src"), "-o", str(tmp_path / "src" / "v.jsonl")]) == 2
    assert "is inside the input directory" in capsys.readouterr().err
    rows = tmp_path / "v.jsonl"
    rows.write_text(json.dumps({"id": 1, "embedding": [0.5], "space": "s", "truncated": False, "dropped_tokens": 0}))
    assert main(["embed", str(tmp_path / "src"), "-o", str(rows)]) == 2
    assert "v.jsonl exists; choose another output, or pass --overwrite" in capsys.readouterr().err


# --- paths swapped after the job started (#11) ----------------------------------------------------


async def queued_behind(runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path) -> str:
    """Start a job that holds the provider, so the next one waits in the queue; returns its id."""
    blocker = await runner.start(str(write_chunks(tmp_path / "first.jsonl", 1)), "first-out.jsonl")
    with anyio.fail_after(10):
        await providers["fake"].entered.wait()
    return blocker.job.id


async def test_an_input_swapped_for_a_symlink_out_of_the_roots_is_not_read(
    settings: Settings, service: object, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("the secret text")
    from providers.jobs.engine import InProcessEngine

    async with JobRunner(settings, AllowedRoots((root,)), engine=InProcessEngine(service)) as runner:  # type: ignore[arg-type]
        await queued_behind(runner, providers, root)
        source = root / "notes.txt"
        source.write_text("harmless")
        queued = await runner.start(str(source), "out.jsonl")
        source.unlink()
        source.symlink_to(outside)  # swapped while the job waits
        providers["fake"].gate.set()
        with anyio.fail_after(10):
            job = await runner.wait(queued.job.id)
    assert job.status == "failed" and "a symlink leading out of the allowed directories" in (job.last_error or "")
    assert "the secret text" not in providers["fake"].sent


async def test_an_output_directory_swapped_for_a_symlink_out_gets_nothing_written_out(
    settings: Settings, service: object, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    from providers.jobs.engine import InProcessEngine

    async with JobRunner(settings, AllowedRoots((root,)), engine=InProcessEngine(service)) as runner:  # type: ignore[arg-type]
        await queued_behind(runner, providers, root)
        queued = await runner.start(str(write_chunks(root / "in.jsonl", 3)), "out/vectors.jsonl")
        (root / "out").rename(root / "out.old")
        (root / "out").symlink_to(outside, target_is_directory=True)
        providers["fake"].gate.set()
        with anyio.fail_after(10):
            job = await runner.wait(queued.job.id)
    assert job.status == "failed" and "symlink" in (job.last_error or "")
    assert list(outside.iterdir()) == []


async def test_an_output_directory_swapped_while_the_job_runs_is_not_renamed_into(
    runner: JobRunner, providers: dict[str, GatedProvider], tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = await runner.start(str(write_chunks(tmp_path / "in.jsonl", 3)), "out/vectors.jsonl")
    with anyio.fail_after(10):
        await providers["fake"].entered.wait()  # its .partial is open in out/
    os.rename(tmp_path / "out", tmp_path / "out.old")
    (tmp_path / "out").symlink_to(elsewhere, target_is_directory=True)
    providers["fake"].gate.set()
    with anyio.fail_after(10):
        job = await runner.wait(started.job.id)
    assert job.status == "failed" and "symlink" in (job.last_error or "")
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "out.old" / "vectors.jsonl").exists()


def test_a_writer_never_renames_into_a_directory_swapped_since_it_opened(tmp_path: Path) -> None:
    from providers.jobs.writers import JsonlWriter

    (tmp_path / "out").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    writer = JsonlWriter(tmp_path / "out" / "v.jsonl", "s")
    writer.write([1], np.zeros((1, 2), dtype=np.float32), [0])
    os.rename(tmp_path / "out", tmp_path / "out.old")
    (tmp_path / "out").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="is no longer the directory the output was started in"):
        writer.commit()
    writer.discard()
    assert list(elsewhere.iterdir()) == [] and list((tmp_path / "out.old").iterdir()) == []
