"""`embed DIR`: a dry run sends nothing; a rerun reads and sends only what changed, and the output is the tree now.

In process against the loopback OpenAI server (the real provider and SDK).
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import providers.chunking.incremental as incremental
from providers import Settings
from server.commands.embed import add_commands, run_embed
from tests.loopback_openai import LoopbackOpenAI, embedding_for


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(api_key="sk-test") as loopback:
        yield loopback


@pytest.fixture
def openai(server: LoopbackOpenAI, settings: Settings) -> Settings:
    return replace(settings, provider="openai", openai_base_url=server.base_url, openai_api_key="sk-test")


def embed(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return run_embed(parser.parse_args(["embed", *argv]), settings)


def function(name: str, body: str = "return 1") -> str:
    return f"def {name}(value):\n    '''Compute {name} of a value.'''\n    {body}\n"


def make_tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "vendor" / "lib").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text(function("alpha") + "\n\n" + function("beta"))
    (root / "pkg" / "b.py").write_text(function("gamma"))
    (root / "pkg" / "c.py").write_text(function("delta"))
    (root / "vendor" / "lib" / "big.py").write_text("\n\n".join(function(f"v{i}") for i in range(30)))
    (root / "README.md").write_text("# Tree\n\nA small tree for the tests.\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")


def rows_of(output: Path) -> dict[str, tuple[np.ndarray, dict[str, object]]]:
    if output.suffix == ".npy":
        vectors = np.load(output)
        ids = [json.loads(line) for line in output.with_name(f"{output.stem}.ids.jsonl").read_text().splitlines()]
        return {row["id"]: (vectors[i], row) for i, row in enumerate(ids)}
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    return {row["id"]: (np.asarray(row["embedding"], np.float32), row) for row in rows}


def texts_of(tree: Path, rows: dict[str, tuple[np.ndarray, dict[str, object]]]) -> dict[str, str]:
    found = {}
    for chunk_id, (_, row) in rows.items():
        lines = (tree / str(row["path"])).read_text().splitlines(keepends=True)
        found[chunk_id] = "".join(lines[int(row["start_line"]) - 1 : int(row["end_line"])])  # type: ignore[call-overload]
    return found


def test_a_dry_run_reports_files_chunks_tokens_cost_and_directories_and_sends_nothing(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    assert embed(openai, str(tree), "--dry-run") == 0
    out = capsys.readouterr().out
    assert server.request_count == 0
    assert "dry run: nothing was sent" in out
    assert "5 files" in out and "Batch API $" in out
    top = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert top[0][0] == "vendor/" and top[1][0] == "vendor/lib/"  # most of the tokens are there
    assert "skipped 1 file: 1 binary" in out
    assert not list(tmp_path.glob("*.jsonl"))


@pytest.mark.parametrize("name", ["out.jsonl", "out.npy"])
def test_a_rerun_reads_and_sends_only_what_changed_and_the_output_is_the_tree_now(
    openai: Settings,
    server: LoopbackOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    tree, output = tmp_path / "tree", tmp_path / name
    make_tree(tree)
    # --no-cache: what is not sent again comes from the last output, not from the cache
    assert embed(openai, str(tree), "--no-cache", "-o", str(output)) == 0
    first = rows_of(output)
    sent_before = len(server.embedded_inputs())
    assert sent_before == len(first)

    (tree / "pkg" / "a.py").write_text(function("alpha") + "\n\n" + function("beta", "return 2"))  # an edit
    (tree / "pkg" / "b.py").unlink()  # a delete
    (tree / "pkg" / "e.py").write_text(function("epsilon"))  # a new file
    (tree / "pkg" / "c.py").touch()  # a new mtime, the same text: hashed, not chunked again
    read: list[str] = []
    real_read = incremental.read_file
    monkeypatch.setattr(incremental, "read_file", lambda path, *a: read.append(path.name) or real_read(path, *a))
    capsys.readouterr()
    assert embed(openai, str(tree), "--no-cache", "-o", str(output)) == 0

    assert set(read) == {"a.py", "e.py"}  # read to check and count them, then to embed them
    sent = server.embedded_inputs()[sent_before:]
    assert sorted(sent) == sorted([(tree / "pkg" / "a.py").read_text(), function("epsilon")])  # a file a chunk
    now = rows_of(output)
    paths = {"pkg/a.py", "pkg/c.py", "pkg/e.py", "vendor/lib/big.py", "README.md"}
    assert {row["path"] for _, row in now.values()} == paths
    for chunk_id, text in texts_of(tree, now).items():  # every row is the tree's current text
        np.testing.assert_allclose(now[chunk_id][0], embedding_for(text), rtol=0, atol=1e-7)
        assert now[chunk_id][1]["sha256"] is not None
    err = capsys.readouterr().err
    assert "since the last run: files: 1 added, 1 changed, 1 removed, 3 unchanged" in err
    assert "chunks: 2 added, 2 removed" in err  # a.py's new text and e.py; a.py's old text and b.py


def test_an_output_changed_since_is_not_trusted_and_every_file_is_read_again(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path
) -> None:
    tree, output = tmp_path / "tree", tmp_path / "out.jsonl"
    make_tree(tree)
    assert embed(openai, str(tree), "--no-cache", "-o", str(output)) == 0
    rows = output.read_text().splitlines()
    output.write_text("\n".join(rows[1:]) + "\n")  # someone cut a row out
    before = len(server.embedded_inputs())
    assert embed(openai, str(tree), "--no-cache", "-o", str(output)) == 0
    assert len(server.embedded_inputs()) - before == len(rows)
    assert len(output.read_text().splitlines()) == len(rows)


def test_carried_rows_take_the_encoding_of_the_new_run(
    openai: Settings, server: LoopbackOpenAI, tmp_path: Path
) -> None:
    tree, output = tmp_path / "tree", tmp_path / "out.jsonl"
    make_tree(tree)
    assert embed(openai, str(tree), "--no-cache", "-o", str(output)) == 0
    floats = {row["id"]: row["embedding"] for row in map(json.loads, output.read_text().splitlines())}
    before = len(server.embedded_inputs())
    assert embed(openai, str(tree), "--no-cache", "--encoding", "base64", "-o", str(output)) == 0
    assert len(server.embedded_inputs()) == before  # nothing changed: nothing sent
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert {row["id"] for row in rows} == set(floats)
    for row in rows:
        np.testing.assert_array_equal(
            np.frombuffer(base64.b64decode(row["embedding"]), "<f4"), np.asarray(floats[row["id"]], np.float32)
        )
