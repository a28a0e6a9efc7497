"""`signal-hub-embeddings embed` and `cache`: formats, bad input, exit codes, progress, kill and resume.

Most runs are in process against the loopback OpenAI server (the real provider and SDK, fast);
a few are real subprocesses where the process boundary is the point: the packaged local model,
stdout staying clean, and a `kill -9` half-way through a job.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from providers import InputLimits, Settings
from providers.storage.cache import EmbeddingCache
from server.cli import main
from server.commands import embed as batch
from server.commands.embed import add_commands, run_cache, run_embed
from tests.loopback_openai import LoopbackOpenAI, count_tokens, embedding_for

ROOT = Path(__file__).resolve().parents[1]
SPACE = "openai:text-embedding-3-small:1536:l2"
CHUNKS = {"a": "def add(a, b):\n    return a + b", "b": "class Stack:\n    pass", "c": "import os"}


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key="sk-test") as loopback:
        yield loopback


@pytest.fixture
def openai(server: LoopbackOpenAI, settings: Settings) -> Settings:
    return replace(settings, provider="openai", openai_base_url=server.base_url, openai_api_key="sk-test")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def embed(settings: Settings, *argv: str) -> int:
    return run_embed(parse("embed", *argv), settings)


def write_jsonl(path: Path, records: Sequence[object]) -> Path:
    path.write_text("".join(f"{r if isinstance(r, str) else json.dumps(r)}\n" for r in records))
    return path


@pytest.fixture
def chunks(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chunks.jsonl", [{"id": k, "text": v} for k, v in CHUNKS.items()])


def read_output(path: Path) -> dict[object, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {row["space"] for row in rows} <= {SPACE}
    return {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in rows}


def cached_texts(data_dir: Path, texts: list[str]) -> list[str]:
    cache = EmbeddingCache(data_dir / "cache.sqlite3")
    try:
        return list(cache.get_many(SPACE, texts, 1536))
    finally:
        cache.close()


def assert_vectors_of(vectors: Mapping[Any, np.ndarray], texts: Mapping[Any, str]) -> None:
    assert list(vectors) == list(texts)
    for key, text in texts.items():  # the provider renormalises: the last bit may differ
        np.testing.assert_allclose(vectors[key], embedding_for(text), rtol=0, atol=1e-7)


# --- formats ---------------------------------------------------------------------------------------


def test_jsonl_in_gives_each_id_its_exact_vector_in_input_order_and_nothing_on_stdout(
    openai: Settings, chunks: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert embed(openai, str(chunks), "-o", str(tmp_path / "out.jsonl")) == 0
    assert_vectors_of(read_output(tmp_path / "out.jsonl"), CHUNKS)
    out, err = capfd.readouterr()
    assert out == ""
    assert f"wrote 3 vectors to {tmp_path / 'out.jsonl'} ({SPACE})" in err
    tokens = sum(count_tokens(text) for text in CHUNKS.values())  # as the server counts and bills them
    assert f"embedded 3, cached 0, failed 0; {tokens} tokens, ${tokens * 0.02 / 1e6:.6f}" in err
    assert not list(tmp_path.glob("*.partial"))


def test_a_second_run_comes_from_the_cache_without_a_request_and_the_ledger_counts_the_hits(
    openai: Settings, chunks: Path, tmp_path: Path, server: LoopbackOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    embed(openai, str(chunks), "-o", str(tmp_path / "cold.jsonl"))
    requests = server.request_count
    assert embed(openai, str(chunks), "-o", str(tmp_path / "warm.jsonl")) == 0
    assert server.request_count == requests
    assert (tmp_path / "warm.jsonl").read_bytes() == (tmp_path / "cold.jsonl").read_bytes()
    assert "embedded 0, cached 3, failed 0; 0 tokens, $0.00" in capsys.readouterr().err


def test_npy_output_is_one_float32_row_per_id_with_the_ids_beside_it(
    openai: Settings, chunks: Path, tmp_path: Path
) -> None:
    assert embed(openai, str(chunks), "-o", str(tmp_path / "out.npy"), "--window", "2") == 0
    vectors = np.load(tmp_path / "out.npy", mmap_mode="r")
    ids = [json.loads(line) for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()]
    assert vectors.dtype == np.float32 and vectors.shape == (3, 1536) and ids == list(CHUNKS)
    assert_vectors_of(dict(zip(ids, np.asarray(vectors), strict=True)), CHUNKS)


def test_base64_embeddings_decode_to_the_same_float32_vectors(openai: Settings, chunks: Path, tmp_path: Path) -> None:
    embed(openai, str(chunks), "-o", str(tmp_path / "floats.jsonl"))
    assert embed(openai, str(chunks), "--encoding", "base64", "-o", str(tmp_path / "base64.jsonl")) == 0
    rows = [json.loads(line) for line in (tmp_path / "base64.jsonl").read_text().splitlines()]
    decoded = {row["id"]: np.frombuffer(base64.b64decode(row["embedding"]), "<f4") for row in rows}
    floats = read_output(tmp_path / "floats.jsonl")
    for key in CHUNKS:
        np.testing.assert_array_equal(decoded[key], floats[key])
    assert (tmp_path / "base64.jsonl").stat().st_size * 2 < (tmp_path / "floats.jsonl").stat().st_size


def test_files_are_chunked_and_directories_give_the_files_worth_embedding_in_path_order(
    openai: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "src"
    (tree / "pkg" / ".git").mkdir(parents=True)
    (tree / "pkg" / ".git" / "config.py").write_text("hidden = True")
    (tree / "pkg" / "b.py").write_text("b = 2")
    (tree / "a.py").write_text("\ufeffa = 1")  # a byte-order mark is not part of the text
    (tree / "notes.md").write_text("not python")
    (tree / ".env.py").write_text("SECRET = 1")
    (tree / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    (tree / "__pycache__").mkdir()
    (tree / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00\x01")
    single = tmp_path / "one.txt"
    single.write_text("just text")
    assert embed(openai, str(single), str(tree), "--glob", "*.py", "-o", str(tmp_path / "out.jsonl")) == 0
    expected = {"one.txt:1-1": "just text", "a.py:1-1": "a = 1", "pkg/b.py:1-1": "b = 2"}
    assert_vectors_of(read_output(tmp_path / "out.jsonl"), expected)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[2]["path"] == "pkg/b.py" and rows[2]["language"] == "python"
    assert rows[2]["sha256"] == hashlib.sha256(b"b = 2").hexdigest()
    err = capsys.readouterr().err
    # .git and __pycache__ are pruned whole; logo.png and notes.md do not match the glob
    assert "skipped 5 files: 2 build or vendored directory, 2 not matching glob, 1 hidden" in err


def test_stdin_jsonl_can_go_to_stdout(
    openai: Settings, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(CHUNKS.values()))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
    assert embed(openai, "-", "-o", "-", "--no-progress") == 0
    out, err = capfd.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["id"] for row in rows] == [0, 1, 2]
    np.testing.assert_allclose(np.asarray(rows[2]["embedding"], np.float32), embedding_for("import os"), atol=1e-7)
    assert "wrote 3 vectors to stdout" in err and "embedding " not in err


def test_the_lines_format_makes_a_chunk_of_each_non_blank_line(
    openai: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"first line\n\n  \nsecond line\r\n")))
    assert embed(openai, "-", "--format", "lines", "-o", str(tmp_path / "out.jsonl")) == 0
    assert_vectors_of(read_output(tmp_path / "out.jsonl"), {"stdin:1": "first line", "stdin:4": "second line"})


def test_a_text_repeated_in_windows_in_flight_is_sent_once(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path
) -> None:
    texts = ["same", "one", "same", "two", "same", "one", "three"]
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    assert embed(openai, str(source), "--window", "2", "-o", str(tmp_path / "out.jsonl")) == 0
    assert sorted(server.embedded_inputs()) == ["one", "same", "three", "two"]
    assert_vectors_of(read_output(tmp_path / "out.jsonl"), dict(enumerate(texts)))


def test_without_the_cache_every_run_sends_again(
    openai: Settings, chunks: Path, tmp_path: Path, server: LoopbackOpenAI
) -> None:
    for _ in range(2):
        assert embed(openai, str(chunks), "--no-cache", "--overwrite", "-o", str(tmp_path / "out.jsonl")) == 0
    assert len(server.embedded_inputs()) == 6
    assert cached_texts(openai.resolved_data_dir, list(CHUNKS.values())) == []


def test_an_empty_input_writes_an_empty_output(openai: Settings, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    assert embed(openai, str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "out.npy")) == 0
    assert np.load(tmp_path / "out.npy").shape == (0, 1536)


# --- bad input and failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON (Expecting property name enclosed in double quotes"),
        ('["a list"]', 'line 2: expected a JSON object with "id" and "text", got list'),
        ('{"text": "no id"}', 'line 2: no "id" field'),
        ('{"id": true, "text": "x"}', 'line 2: "id" must be a string or an integer, not true'),
        ('{"id": "x"}', 'line 2: no "text" field (id "x")'),
        ('{"id": "x", "text": 5}', 'line 2: "text" must be a string, not int (id "x")'),
        ('{"id": "x", "text": " \\n\\t"}', 'line 2: the text is empty or whitespace only (id "x")'),
        ('{"id": "x", "text": "\\ud800"}', "line 2: the text holds an unpaired surrogate"),
        ('{"id": "x", "text": "' + "y" * 101 + '"}', 'line 2: the text is over 100 characters: split it (id "x")'),
    ],
)
def test_a_bad_line_stops_the_job_before_anything_is_sent_naming_the_line(
    openai: Settings,
    tmp_path: Path,
    server: LoopbackOpenAI,
    capsys: pytest.CaptureFixture[str],
    line: str,
    message: str,
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "ok", "text": "fine"}, line, {"id": "z", "text": "zz"}])
    settings = replace(openai, limits=InputLimits(max_text_chars=100))
    assert embed(settings, str(source), "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert f"error: {source} {message}" in err and "--skip-invalid" in err
    assert server.request_count == 0
    assert {p.name for p in tmp_path.iterdir()} <= {source.name, "data"}  # no output, no partial


def test_bad_bytes_and_overlong_lines_are_named_too(
    openai: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "\xff"}\n' + b"x" * 70_000 + b'\n{"id": 3, "text": "last"}'
    )
    settings = replace(openai, limits=InputLimits(max_text_chars=100))
    assert embed(settings, str(source), "--skip-invalid", "-o", str(tmp_path / "out.jsonl")) == 0
    assert list(read_output(tmp_path / "out.jsonl")) == [1, 3]
    (tmp_path / "big.txt").write_text("é" * 101)
    (tmp_path / "binary.bin").write_bytes(b"\x00\xff")
    err = capsys.readouterr().err
    assert f"{source} line 2: not UTF-8 text (invalid start byte at byte 19)" in err
    assert f"{source} line 3: the line is longer than 66,136 bytes" in err
    (tmp_path / "big.txt").write_text("é" * 101)
    (tmp_path / "binary.bin").write_bytes(b"\x00\xff")
    for name, message in [
        ("big.txt", " lines 1-1: the text is over 100"),  # one line: a chunk never cuts one
        ("binary.bin", ": not UTF-8 text (invalid start byte"),
    ]:
        assert embed(settings, str(tmp_path / name), "-o", str(tmp_path / "x.jsonl")) == 2
        assert f"error: {tmp_path / name}{message}" in capsys.readouterr().err


def test_skip_invalid_skips_bad_records_and_counts_them_as_failed(
    openai: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.commands.tree._MAX_REPORTED_SKIPS", 2)
    records = [{"id": 1, "text": "good"}, "oops", {"id": 2}, {"id": 3, "text": ""}, {"id": 4, "text": "also good"}]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    assert embed(openai, str(source), "--skip-invalid", "-o", str(tmp_path / "out.jsonl")) == 0
    assert list(read_output(tmp_path / "out.jsonl")) == [1, 4]
    err = capsys.readouterr().err
    assert f"skipped {source} line 2: not valid JSON" in err and f"skipped {source} line 3" in err
    assert "skipping more bad records without naming them" in err
    assert "embedded 2, cached 0, failed 3" in err


def test_a_bad_stdin_line_stops_the_job_after_the_windows_before_it_are_cached(
    openai: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps({"id": i, "text": f"text {i}"}) for i in range(6)] + ["{bad"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(lines).encode())))
    assert embed(openai, "-", "--window", "2", "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert "error: stdin line 7: not valid JSON" in err
    assert "the same command again goes on from there" in err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.partial").exists()
    assert len(cached_texts(openai.resolved_data_dir, [f"text {i}" for i in range(7)])) == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jsonl", "-o", "out.jsonl"], "missing.jsonl: no such file or directory."),
        (["in.jsonl", "-o", "nowhere/out.jsonl"], "the directory nowhere does not exist"),
        (["in.jsonl", "-o", "."], "--output . is a directory"),
        (["in.jsonl", "-o", "in.jsonl"], "--output in.jsonl is also an input"),
        (["in.jsonl", "-o", "out.jsonl", "--window", "0"], "--window must be between 1 and 2048, not 0"),
        (["-", "-", "-o", "out.jsonl"], "stdin (-) can be read only once"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    openai: Settings,
    chunks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(chunks.parent)
    chunks.rename("in.jsonl")
    assert embed(openai, *argv) == 2
    assert message in capsys.readouterr().err


def test_a_provider_failure_exits_1_and_leaves_no_output(
    openai: Settings, chunks: Path, tmp_path: Path, server: LoopbackOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    server.inject("insufficient_quota")
    assert embed(openai, str(chunks), "-o", str(tmp_path / "out.npy")) == 1
    err = capsys.readouterr().err
    assert "error: " in err
    assert "embedded 0, cached 0, failed 3;" in err  # not "failed 0": no chunk got a vector
    assert list(tmp_path.glob("out*")) == []


def test_repeated_ids_are_embedded_but_warned_about(
    openai: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x = 1"}, {"id": "a", "text": "y = 2"}])
    assert embed(openai, str(source), "-o", str(tmp_path / "out.jsonl")) == 0
    assert '1 repeated id (e.g. "a"): rows with one id disagree; give each chunk its own id.' in capsys.readouterr().err
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_texts_cut_to_the_window_are_reported_in_the_summary_and_on_each_row(
    shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = Settings(data_dir=shared_data_dir, cache=False)
    long_text = " ".join(f"word{i}" for i in range(600))  # far over the 256-token window
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "short", "text": "x = 1"}, {"id": "long", "text": long_text}])
    assert embed(local, str(source), "-o", str(tmp_path / "out.jsonl")) == 0
    rows = {row["id"]: row for row in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert rows["short"]["truncated"] is False and rows["short"]["dropped_tokens"] == 0
    assert rows["long"]["truncated"] is True and rows["long"]["dropped_tokens"] > 500
    err = capsys.readouterr().err
    assert f"warning: 1 chunk longer than the model's window was cut ({rows['long']['dropped_tokens']:,} tokens" in err

    assert embed(local, str(source), "-o", str(tmp_path / "out.npy")) == 0
    ids = [json.loads(line) for line in (tmp_path / "out.ids.jsonl").read_text().splitlines()]
    assert ids == ["short", {"id": "long", "truncated": True, "dropped_tokens": rows["long"]["dropped_tokens"]}]

    capsys.readouterr()
    split = replace(local, local_long_texts="split")
    assert embed(split, str(source), "-o", str(tmp_path / "split.jsonl")) == 0
    assert "warning" not in capsys.readouterr().err
    assert all(not json.loads(line)["truncated"] for line in (tmp_path / "split.jsonl").read_text().splitlines())


def test_an_unknown_model_is_a_usage_error(openai: Settings, chunks: Path, tmp_path: Path) -> None:
    assert embed(openai, str(chunks), "--model", "text-embedding-9", "-o", str(tmp_path / "out.jsonl")) == 2


def test_a_second_run_writing_the_same_output_is_refused(
    openai: Settings, chunks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (tmp_path / "out.jsonl.partial").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert embed(openai, str(chunks), "-o", str(tmp_path / "out.jsonl")) == 2
    assert "another run is writing" in capsys.readouterr().err


def test_a_write_failure_exits_1(
    openai: Settings, chunks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch.JsonlWriter, "write", disk_full)
    assert embed(openai, str(chunks), "-o", str(tmp_path / "out.jsonl")) == 1
    assert list(tmp_path.glob("out*")) == []


def test_a_closed_stdout_and_an_interrupt_end_the_job_cleanly(
    openai: Settings, chunks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_pipe(*_: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(batch.JsonlWriter, "write", broken_pipe)
    monkeypatch.setattr(os, "dup2", lambda *_: None)  # pytest owns the real stdout
    assert embed(openai, str(chunks), "-o", "-") == 1

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(anyio, "run", interrupt)
    assert embed(openai, str(chunks), "-o", str(tmp_path / "out.jsonl")) == 130


# --- progress --------------------------------------------------------------------------------------


def test_progress_goes_to_stderr_with_the_count_and_the_cost_so_far(
    openai: Settings, chunks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert embed(openai, str(chunks), "-o", str(tmp_path / "out.jsonl")) == 0
    out, err = capsys.readouterr()
    assert out == ""
    bar = next(line for line in err.replace("\r", "\n").splitlines() if line.startswith("embedding: 100%"))
    assert "3/3" in bar and "$0.0000" in bar


def test_no_progress_leaves_only_the_summary(
    openai: Settings, chunks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert embed(openai, str(chunks), "--no-progress", "-o", str(tmp_path / "out.jsonl")) == 0
    assert "embedding:" not in capsys.readouterr().err


def test_times_and_sizes_read_naturally() -> None:
    assert [batch.format_seconds(s) for s in (3.21, 75, 3725)] == ["3.2s", "1m15s", "1h02m05s"]
    assert [batch.format_usd(u) for u in (0, 0.0000123, 1234.5)] == ["$0.00", "$0.000012", "$1,234.5000"]
    assert [batch.format_bytes(b) for b in (512, 2048, 5 << 30)] == ["512 B", "2.0 KiB", "5.0 GiB"]


# --- the cache command -----------------------------------------------------------------------------


def test_cache_stats_and_prune(
    openai: Settings, chunks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    embed(openai, str(chunks), "-o", str(tmp_path / "out.jsonl"))
    capsys.readouterr()
    assert run_cache(parse("cache", "stats"), replace(openai, cache=False)) == 0
    out = capsys.readouterr().out
    assert "(not used: SIGNAL_HUB_CACHE is off)" in out
    assert "3 entries, 18.0 KiB of vectors" in out and f"           3  {SPACE}" in out

    assert run_cache(parse("cache", "stats", "--json"), openai) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["entries"], stats["bytes"], stats["by_space"], stats["enabled"]) == (3, 18432, {SPACE: 3}, True)

    assert run_cache(parse("cache", "prune", "--older-than-days", "1"), openai) == 0
    assert "pruned 0 entries; 3 left" in capsys.readouterr().out
    assert run_cache(parse("cache", "prune", "--space", "local:other:384:l2"), openai) == 0
    assert run_cache(parse("cache", "prune", "--space", SPACE, "--older-than-days", "0"), openai) == 0
    assert "pruned 3 entries; 0 left" in capsys.readouterr().out
    assert run_cache(parse("cache", "prune", "--all"), openai) == 0


@pytest.mark.parametrize("argv", [[], ["--all", "--space", "s"], ["--older-than-days", "-1"]])
def test_cache_prune_needs_to_be_told_what_to_delete(
    openai: Settings, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cache(parse("cache", "prune", *argv), openai) == 2
    assert "cache prune: " in capsys.readouterr().err


def test_cache_commands_report_a_bad_configuration(settings: Settings) -> None:
    assert run_cache(parse("cache", "stats"), replace(settings, local_model="nope")) == 2


def test_main_dispatches_embed_and_cache_from_the_environment(
    server: LoopbackOpenAI, chunks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "SIGNAL_HUB_PROVIDER": "openai",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "SIGNAL_HUB_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["embed", str(chunks), "-o", str(tmp_path / "out.jsonl")]) == 0
    assert main(["cache", "prune", "--all"]) == 0
    assert len(read_output(tmp_path / "out.jsonl")) == 3


# --- real processes --------------------------------------------------------------------------------


def cli(*argv: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *argv],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_the_local_model_in_a_real_process_writes_unit_vectors_and_keeps_stdout_clean(
    chunks: Path, tmp_path: Path
) -> None:
    env = {"SIGNAL_HUB_DATA_DIR": str(tmp_path / "data"), "SIGNAL_HUB_PROVIDER": "local"}
    cold = cli("embed", str(chunks), "-o", str(tmp_path / "out.jsonl"), env=env)
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout == ""
    assert "embedding: 100%" in cold.stderr and "3/3" in cold.stderr and "embedded 3, cached 0, failed 0" in cold.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == list(CHUNKS)
    assert {row["space"] for row in rows} == {"local:all-MiniLM-L6-v2:384:l2"}
    norms = np.linalg.norm(np.asarray([row["embedding"] for row in rows], dtype=np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    warm = cli("embed", str(chunks), "-o", str(tmp_path / "out.npy"), "--no-progress", env=env)
    assert warm.returncode == 0 and "embedded 0, cached 3" in warm.stderr and "embedding " not in warm.stderr
    # The JSON decimals give back the very float32 values the .npy holds.
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.asarray([r["embedding"] for r in rows], np.float32))


@pytest.mark.slow
def test_bad_input_in_a_real_process_exits_2_before_the_model_loads(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "ok"}, {"id": 2, "text": "   "}])
    run = cli("embed", str(source), "-o", "-", env={"SIGNAL_HUB_DATA_DIR": str(tmp_path / "data")}, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert f"error: {source} line 2: the text is empty or whitespace only (id 2)" in run.stderr


@pytest.mark.slow
def test_killed_half_way_the_rerun_sends_only_what_is_not_cached(tmp_path: Path) -> None:
    texts = [f"def function_{i}(x):\n    return x * {i}  # chunk {i}" for i in range(400)]
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    output = tmp_path / "out.jsonl"
    with LoopbackOpenAI(api_key="sk-test", latency=0.1) as server:
        env = {
            "SIGNAL_HUB_DATA_DIR": str(tmp_path / "data"),
            "SIGNAL_HUB_PROVIDER": "openai",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test",
        }
        argv = [sys.executable, "-m", "server", "embed", str(source), "-o", str(output), "--window", "10"]
        job = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while server.inputs_embedded < len(texts) // 2 and job.poll() is None:
                assert time.monotonic() < deadline, "the job never got half-way"
                time.sleep(0.005)
            job.send_signal(signal.SIGKILL)
        finally:
            job.kill()
            job.wait(timeout=10)
        assert job.returncode == -signal.SIGKILL
        assert not output.exists() and output.with_name("out.jsonl.partial").exists()
        first_run = server.embedded_inputs()
        cached = set(cached_texts(tmp_path / "data", texts))
        assert 0 < len(cached) < len(texts) and cached <= set(first_run)

        server.latency = 0
        server.reset_counters()
        rerun = cli("embed", str(source), "-o", str(output), "--window", "10", env=env, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        resent = server.embedded_inputs()
        assert sorted(resent) == sorted(set(texts) - cached)  # every remaining text once, no cached one
        assert f"embedded {len(resent)}, cached {len(cached)}, failed 0" in rerun.stderr
    assert_vectors_of(read_output(output), dict(enumerate(texts)))
    assert not output.with_name("out.jsonl.partial").exists()


def test_prepare_builds_the_local_model_once_and_says_so_on_stderr(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIGNAL_HUB_DATA_DIR", str(data_dir))
    assert main(["prepare"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "local model prepared: all-MiniLM-L6-v2 (onnx-int8 on cpu" in err and "ready" not in err
    assert any((data_dir / "onnx").glob("int8-*/model.onnx"))
    monkeypatch.setenv("SIGNAL_HUB_LOCAL_MODEL", "no-such-model")
    assert main(["prepare"]) == 1
    assert "the local model is not usable: " in capsys.readouterr().err
