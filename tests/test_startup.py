"""`signal-hub-embeddings` as a real process: it starts or refuses in one line, says when it is ready,
and answers every request line it is sent, even one it cannot read."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from providers import EmbeddingResult
from providers.storage.cache import EmbeddingCache
from providers.storage.ledger import CostLedger
from tests.stdio_process import SERVER, START_S, RawServer, assert_refused_in_one_line, refusal, server_env

pytestmark = pytest.mark.slow


@pytest.fixture
def raw_server(data_dir: Path) -> Iterator[RawServer]:
    server = RawServer(server_env(data_dir))
    try:
        yield server
    finally:
        server.close()


def estimate_call(request_id: int, texts_json: str) -> str:
    """A tools/call line written by hand, so it can carry escapes `json.dumps` would never write."""
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
        f'"params":{{"name":"estimate_cost","arguments":{{"texts":{texts_json}}}}}}}'
    )


def test_the_server_says_on_stderr_when_it_is_ready(raw_server: RawServer, data_dir: Path) -> None:
    ready = raw_server.stderr_line("ready", timeout=START_S)
    assert ready.strip() == (
        f"signal-hub-embeddings: ready on stdio (provider local, model all-MiniLM-L6-v2, data in {data_dir})"
    )
    raw_server.initialize()  # and stdout carried nothing before the first answer


def test_a_lone_surrogate_in_an_argument_is_answered_and_the_server_serves_on(raw_server: RawServer) -> None:
    raw_server.initialize()
    raw_server.send(estimate_call(2, '["fine", "half an emoji \\ud83d"]'))
    refused = raw_server.answer()
    assert refused["id"] == 2
    assert refused["error"]["code"] == -32602
    assert "params.arguments.texts[1] holds a lone surrogate escape (\\ud83d)" in refused["error"]["message"]

    raw_server.send(estimate_call(3, '["a whole emoji \\ud83d\\ude00"]'))  # a pair is fine
    served = raw_server.answer()
    assert served["id"] == 3 and served["result"]["structuredContent"]["texts"] == 1


def test_every_unreadable_line_with_an_id_is_answered_and_the_rest_are_skipped(raw_server: RawServer) -> None:
    raw_server.initialize()
    raw_server.send('{"jsonrpc":"2.0","method":"notifications/progress","params":{"note":"\\udc00"}}')  # no id
    raw_server.send("not json at all")
    raw_server.send('{"jsonrpc":"2.0","id":4,"method":5}')
    raw_server.send('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x","\\ud800":1}}')
    first, second = raw_server.answer(), raw_server.answer()
    assert (first["id"], first["error"]["code"]) == (4, -32600)
    assert "method: Input should be a valid string" in first["error"]["message"]
    assert (second["id"], second["error"]["code"]) == (5, -32602)
    assert "params (a key) holds a lone surrogate" in second["error"]["message"]
    raw_server.request(6, "tools/list", {})
    assert len(raw_server.answer()["result"]["tools"]) >= 6


def make_damaged(path: Path) -> None:
    """Keep the first page (header and schema), write garbage over every page after it."""
    size = path.stat().st_size
    assert size > 4 * 4096, "too small to damage past the first page"
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(np.random.default_rng(0).bytes(size - 4096))


def test_a_damaged_ledger_stops_the_server_with_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    one = EmbeddingResult(vectors=np.zeros((1, 4), np.float32), provider="openai", model="m", tokens=5)
    for _ in range(1000):
        ledger.record(one)
    ledger.close()
    make_damaged(path)
    assert_refused_in_one_line(refusal(server_env(tmp_path)), f"the cost ledger at {path} is damaged", "move it aside")


def test_a_damaged_cache_stops_the_server_with_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    cache = EmbeddingCache(path)
    texts = [f"chunk {i}" for i in range(200)]
    cache.put_many("space", texts, np.ones((200, 384), np.float32), [0] * 200)
    cache.close()
    make_damaged(path)
    assert_refused_in_one_line(
        refusal(server_env(tmp_path)), f"the embedding cache at {path} is damaged", "move it aside"
    )
    shutil.move(path, tmp_path / "cache.sqlite3.damaged")  # as the message says: then it starts
    assert EmbeddingCache(path).stats().entries == 0


def test_an_unknown_local_model_stops_the_server_with_one_line(tmp_path: Path) -> None:
    run = refusal(server_env(tmp_path, SIGNAL_HUB_LOCAL_MODEL="nope"))
    assert_refused_in_one_line(run, "unknown local model 'nope'", "SIGNAL_HUB_LOCAL_MODELS")


def test_a_data_directory_that_is_a_file_stops_the_server_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    run = refusal(server_env(tmp_path / "data"))
    assert_refused_in_one_line(run, f"{tmp_path / 'data'} is a file, not a directory", "SIGNAL_HUB_DATA_DIR")


def test_a_read_only_data_directory_stops_the_server_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    command = SERVER
    if os.geteuid() == 0:  # root writes through file modes: make the directory a read-only mount instead
        if shutil.which("unshare") is None:
            pytest.fail("running as root needs util-linux's unshare to make a read-only directory")
        remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", remount, str(data), *SERVER]
    else:
        data.chmod(0o555)
    try:
        run = refusal(server_env(data), command)
    finally:
        data.chmod(0o755)
    assert_refused_in_one_line(run, f"{data} is not writable", "SIGNAL_HUB_DATA_DIR")
