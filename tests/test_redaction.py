"""No API key in any message, whatever a server echoes back: the Batch API, jobs, the CLI, and what was stored.

Issue 24, high 2: a server answering an upload with 400 and a body that echoes the Authorization
header put OPENAI_API_KEY on the CLI's stderr, in job_status.errors, list_jobs and jobs.sqlite3;
the same on batch create, on retrieve, and on a 401.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import openai
import pytest

from providers import Settings
from providers.batch_api import BatchState
from providers.batch_api.entry import batch_engine
from providers.batch_api.remote import BatchRemote
from providers.errors import AuthenticationError, EmbeddingError, InputError, ProviderError
from providers.jobs.paths import AllowedRoots
from providers.jobs.runner import JobRunner
from providers.jobs.store import JobStore
from providers.redaction import MAX_MESSAGE_CHARS, REDACTED, add_secret, cut, redact, safe_message, scrub_column
from server.commands.embed import add_commands, run_embed
from tests.loopback_hostile import Answer, LoopbackHostile, Request, json_body

KEY = "sk-proj-Secret0123456789abcdefXYZ"
WAIT = 60


def hostile(failing: str, status: int = 400) -> LoopbackHostile:
    """A Files/Batches API whose `failing` step ("upload", "create", "retrieve") echoes the key in an error."""

    def answer(request: Request) -> Answer:
        step = {"/v1/files": "upload", "/v1/batches": "create"}.get(request.path, "retrieve")
        if step == failing:
            said = f"invalid request; headers were Authorization: {request.headers['authorization']}"
            return Answer(status, json_body({"error": {"message": said, "type": "invalid_request_error"}}))
        if step == "upload":
            return Answer(200, json_body(_file()))
        return Answer(200, json_body(_batch()))

    return LoopbackHostile(answer)


def _file() -> dict[str, object]:
    return {"id": "file-1", "object": "file", "bytes": 1, "created_at": 0, "filename": "in.jsonl", "purpose": "batch"}


def _batch() -> dict[str, object]:
    return {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/embeddings",
        "input_file_id": "file-1",
        "completion_window": "24h",
        "status": "validating",
        "created_at": 0,
    }


@pytest.fixture
def settings_for(settings: Settings) -> Iterator[object]:
    def make(server: LoopbackHostile) -> Settings:
        return replace(settings, provider="openai", openai_base_url=server.base_url, openai_api_key=KEY)

    yield make


def test_keys_and_credential_shapes_are_redacted_and_long_messages_keep_both_ends() -> None:
    add_secret("my-gateway-key-42")
    text = 'Bearer abcdefghijklmnop and sk-live0123456789abcdef and {"api_key": "hunter22hunter"} and my-gateway-key-42'
    cleaned = redact(text, environ={})
    for secret in ("abcdefghijklmnop", "sk-live0123456789abcdef", "hunter22hunter", "my-gateway-key-42"):
        assert secret not in cleaned
    assert cleaned.count(REDACTED) == 4
    assert redact("GATEWAY=x", environ={"VOYAGE_API_KEY": "voyage-secret-1"}) == "GATEWAY=x"
    assert redact("key voyage-secret-1", environ={"VOYAGE_API_KEY": "voyage-secret-1"}) == f"key {REDACTED}"

    long = "OpenAI answered 500: " + "x" * 200_000 + " Check the network, or retry later."
    short = cut(long)
    assert len(short) <= MAX_MESSAGE_CHARS
    assert short.startswith("OpenAI answered 500: ") and short.endswith("Check the network, or retry later.")
    assert "characters cut" in short
    assert safe_message("fine") == "fine" and cut("fine") == "fine"


def test_every_embedding_error_is_made_safe_when_it_is_made() -> None:
    error = ProviderError(f"upstream said Authorization: Bearer {KEY} " + "y" * 50_000 + " Retry later.")
    assert KEY not in str(error) and len(str(error)) <= MAX_MESSAGE_CHARS
    assert str(error).endswith("Retry later.")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failing", "status", "error"),
    [("upload", 400, InputError), ("create", 400, InputError), ("upload", 401, AuthenticationError)],
)
async def test_a_batch_api_error_echoing_the_authorization_header_carries_no_key(
    failing: str, status: int, error: type[EmbeddingError]
) -> None:
    with hostile(failing, status) as server:
        client = openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
        remote = BatchRemote(client)
        with anyio.fail_after(WAIT), pytest.raises(error) as raised:
            file_id = await remote.upload("in.jsonl", b"{}\n")
            await remote.create(file_id, {})
        await client.close()
    assert KEY not in str(raised.value) and REDACTED in str(raised.value)
    assert "Authorization" in str(raised.value)  # the rest of what the server said is kept


@pytest.mark.anyio
async def test_reading_a_batch_that_answers_with_the_key_reports_no_key(settings_for: object, tmp_path: Path) -> None:
    with hostile("retrieve") as server:
        engine = batch_engine(settings_for(server))  # type: ignore[operator]
        try:
            with anyio.fail_after(WAIT), pytest.raises(InputError) as raised:
                await engine.run("job-1", ["def f(): pass"])
        finally:
            await engine.aclose()
            engine.cache.close()
            assert engine.ledger is not None
            engine.ledger.close()
    assert KEY not in str(raised.value) and REDACTED in str(raised.value)


def test_the_cli_prints_no_key_when_the_upload_echoes_it(
    settings_for: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "chunks.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "def f(): pass"}) + "\n")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    with hostile("upload") as server:
        args = parser.parse_args(["embed", str(source), "-o", str(tmp_path / "o.jsonl"), "--engine", "batch-api"])
        code = run_embed(args, settings_for(server))  # type: ignore[operator]
    err = capsys.readouterr().err
    assert code == 2 and "OpenAI refused uploading a batch input file (400)" in err  # a refused request: usage
    assert KEY not in err and REDACTED in err


@pytest.mark.anyio
async def test_a_failed_batch_job_stores_and_shows_no_key(settings_for: object, tmp_path: Path) -> None:
    source = tmp_path / "chunks.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "def f(): pass"}) + "\n")
    with hostile("upload") as server:
        async with JobRunner(settings_for(server), AllowedRoots((tmp_path,))) as runner:  # type: ignore[operator]
            job = (await runner.start(str(source), str(tmp_path / "out.jsonl"), engine="batch-api")).job
            with anyio.fail_after(WAIT):
                done = await runner.wait(job.id)
            listed = runner.list()
    assert done.status == "failed" and done.error_list, done
    shown = json.dumps([done.error_list, done.last_error, [(j.errors, j.last_error) for j in listed]])
    assert KEY not in shown and REDACTED in shown
    data_dir = settings_for(server).resolved_data_dir  # type: ignore[operator]
    for name in ("jobs.sqlite3", "batch_jobs.sqlite3"):
        for file in data_dir.glob(f"{name}*"):
            assert KEY.encode() not in file.read_bytes(), file


def test_keys_stored_by_an_older_version_are_scrubbed_at_open(tmp_path: Path) -> None:
    leaked = f"OpenAI refused it (400): Authorization: Bearer {KEY} " + "z" * 20_000
    store = JobStore(tmp_path / "jobs.sqlite3")
    values = dict(input="i", output="o", format="jsonl", glob="*", provider="openai", model="m", space="s")
    job = store.create(**values, fingerprint="f", total=1)
    store.close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")  # as the release before wrote them: whole
    db.execute("UPDATE jobs SET last_error = ?, errors = ? WHERE id = ?", (leaked, json.dumps([leaked]), job.id))
    db.commit()
    db.close()

    state = BatchState(tmp_path / "batch_jobs.sqlite3")
    state.close()
    db = sqlite3.connect(tmp_path / "batch_jobs.sqlite3")
    db.execute(
        "INSERT INTO requests (job_id, custom_id, start, stop, tokens, status, error) VALUES (?, ?, 0, 1, 1, ?, ?)",
        ("j", "texts-0-1", "failed", leaked),
    )
    db.commit()
    db.close()

    reopened = JobStore(tmp_path / "jobs.sqlite3")
    record = reopened.get(job.id)
    reopened.close()
    assert record is not None and record.last_error is not None
    assert KEY not in record.last_error and KEY not in record.errors
    assert len(record.last_error) <= MAX_MESSAGE_CHARS and len(record.error_list[0]) <= MAX_MESSAGE_CHARS
    state = BatchState(tmp_path / "batch_jobs.sqlite3")
    [request] = state.requests("j")
    state.close()
    assert request.error is not None and KEY not in request.error and REDACTED in request.error
    for file in tmp_path.glob("*.sqlite3*"):
        assert KEY.encode() not in file.read_bytes(), file


def test_scrubbing_leaves_what_is_no_message_alone_and_cleans_what_is() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (v)")
    leaked = f"Bearer {KEY}"
    values = [7, "not json: " + leaked, json.dumps({"a": leaked}), json.dumps([1, leaked]), json.dumps(["fine"])]
    db.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in values])
    assert scrub_column(db, "t", "v", json_list=True) == 3
    rows = [v for (v,) in db.execute("SELECT v FROM t ORDER BY rowid")]
    assert rows[0] == 7 and rows[4] == values[4]  # a number and a clean list stay as they were
    assert KEY not in rows[1] and KEY not in rows[2] and json.loads(rows[3]) == [1, f"Bearer {REDACTED}"]
    db.close()
