"""Input types on the local provider: a model's prompts, the override variables, and spaces that name them.

The prompted model is the packaged MiniLM with a `config_sentence_transformers.json` that declares
prompts, built in a temporary directory: nothing comes from a model hub.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client

from providers import ConfigurationError, EmbeddingService, InputError, Settings
from providers.local import LocalProvider, packaged_model_path
from providers.local_model.long_texts import plan_windows
from providers.local_model.options import LocalOptions
from providers.local_model.prompts import Prompts, model_prompts
from server import build_server

pytestmark = pytest.mark.anyio

QUERY_PROMPT = "Represent this query for searching relevant code: "
QUERY = "parse a json file"
CODE = ["def load(path):\n    return json.loads(Path(path).read_text())", "SELECT name FROM users"]


def prompted_model(where: Path, prompts: dict[str, str] | None = None) -> Path:
    """A copy of the packaged MiniLM whose sentence-transformers config declares `prompts`."""
    source = packaged_model_path()
    where.mkdir(parents=True)
    for item in source.iterdir():
        if item.name == "model.safetensors":
            (where / item.name).symlink_to(item)  # the same weights: the session's ONNX export is reused
        elif item.is_dir():
            shutil.copytree(item, where / item.name)
        else:
            shutil.copy(item, where / item.name)
    config = json.loads((source / "config_sentence_transformers.json").read_text())
    config["prompts"] = prompts if prompts is not None else {"query": QUERY_PROMPT, "document": ""}
    (where / "config_sentence_transformers.json").write_text(json.dumps(config))
    return where


@pytest.fixture
def prompted(tmp_path: Path) -> Path:
    return prompted_model(tmp_path / "prompted-mini")


@pytest.fixture
def prompted_settings(data_dir: Path, prompted: Path) -> Settings:
    return Settings(data_dir=data_dir, local_model="prompted-mini", local_models={"prompted-mini": prompted})


@pytest.fixture
async def client(prompted_settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(prompted_settings), read_timeout_seconds=300) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


# over MCP, with a prompted model


async def test_a_query_vector_is_the_document_vector_of_prompt_and_text_over_mcp(client: Client) -> None:
    query = await call(client, "embed_text", text=QUERY, input_type="query")
    document = await call(client, "embed_text", text=QUERY)
    prompted = await call(client, "embed_text", text=QUERY_PROMPT + QUERY, input_type="document")
    assert query["space"] == "local:prompted-mini:384:l2:query"
    assert document["space"] == prompted["space"] == "local:prompted-mini:384:l2:document"
    assert not np.allclose(query["embedding"], document["embedding"], atol=1e-3)
    np.testing.assert_allclose(query["embedding"], prompted["embedding"], atol=1e-6)
    assert query["tokens"] == prompted["tokens"] > document["tokens"]  # the prompt's tokens count too


async def test_the_cache_never_crosses_input_types_over_mcp(client: Client) -> None:
    first = await call(client, "embed_batch", texts=CODE, input_type="query")
    document = await call(client, "embed_batch", texts=CODE)
    again = await call(client, "embed_batch", texts=CODE, input_type="query")
    assert (first["cached"], document["cached"], again["cached"]) == (0, 0, 2)
    assert not np.allclose(first["embeddings"], document["embeddings"], atol=1e-3)
    np.testing.assert_array_equal(again["embeddings"], first["embeddings"])


async def test_rank_texts_embeds_its_query_as_a_query_over_mcp(client: Client) -> None:
    ranked = await call(client, "rank_texts", query=QUERY, texts=CODE)
    query = await call(client, "embed_text", text=QUERY, input_type="query")
    documents = await call(client, "embed_batch", texts=CODE)
    assert query["cached"] == 1 and documents["cached"] == 2  # what rank_texts embedded, as each type
    scores = np.asarray(documents["embeddings"]) @ np.asarray(query["embedding"])
    assert [r["index"] for r in ranked["results"]] == list(np.argsort(-scores))
    np.testing.assert_allclose([r["score"] for r in ranked["results"]], sorted(scores, reverse=True), atol=1e-4)
    assert ranked["space"] == "local:prompted-mini:384:l2:document"


async def test_list_providers_says_which_providers_tell_input_types_apart(client: Client) -> None:
    listed = {p["provider"]: p for p in (await call(client, "list_providers"))["providers"]}
    assert listed["local"]["input_types"] is True
    assert listed["openai"]["input_types"] is False  # OpenAI's embeddings take no input type
    assert listed["compatible"].get("input_types") in (False, None)


async def test_an_unknown_input_type_is_refused_naming_the_choices(client: Client) -> None:
    result = await client.call_tool("embed_text", {"text": "x", "input_type": "code"})
    assert result.is_error and "document" in str(result.content) and "query" in str(result.content)


# the packaged model and the variables


async def test_the_packaged_model_has_no_prompts_so_its_vectors_and_space_do_not_change(
    shared_data_dir: Path,
) -> None:
    provider = LocalProvider(data_dir=shared_data_dir)
    query = await provider.embed([QUERY], input_type="query")
    document = await provider.embed([QUERY])
    assert provider.input_types is False
    assert query.space == document.space == provider.space == "local:all-MiniLM-L6-v2:384:l2"
    np.testing.assert_array_equal(query.vectors, document.vectors)


def env_settings(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"SIGNAL_HUB_DATA_DIR": str(data_dir), **env})


async def test_the_prompt_variables_override_the_models_prompts_and_rename_the_space(data_dir: Path) -> None:
    settings = env_settings(
        data_dir, SIGNAL_HUB_LOCAL_QUERY_PROMPT="query: ", SIGNAL_HUB_LOCAL_DOCUMENT_PROMPT="passage: "
    )
    async with EmbeddingService(settings=settings) as service:
        query = await service.embed([QUERY], input_type="query")
        document = await service.embed([QUERY])
    plain = LocalProvider(data_dir=data_dir)  # the packaged model without the variables
    by_hand = await plain.embed(["query: " + QUERY, "passage: " + QUERY])
    np.testing.assert_allclose(query.vectors[0], by_hand.vectors[0], atol=1e-6)
    np.testing.assert_allclose(document.vectors[0], by_hand.vectors[1], atol=1e-6)
    # Not the model's own prompts: the space names a digest of each, so changing one never reuses the cache.
    assert query.space.startswith("local:all-MiniLM-L6-v2:384:l2:query~") and len(query.space.split("~")[1]) == 8
    assert document.space.startswith("local:all-MiniLM-L6-v2:384:l2:document~") and document.space != query.space


async def test_an_empty_prompt_variable_turns_the_models_prompt_off(data_dir: Path, prompted: Path) -> None:
    settings = env_settings(
        data_dir,
        SIGNAL_HUB_LOCAL_MODEL="prompted-mini",
        SIGNAL_HUB_LOCAL_MODELS=f"prompted-mini={prompted}",
        SIGNAL_HUB_LOCAL_QUERY_PROMPT="",
    )
    provider = LocalProvider.from_settings(settings)
    assert provider.prompts.of("query") == "" and provider.input_types is False
    assert provider.space_for("query") == "local:prompted-mini:384:l2"


async def test_prompts_work_the_same_on_the_torch_backend(prompted: Path, data_dir: Path) -> None:
    provider = LocalProvider("prompted-mini", path=prompted, backend="torch", data_dir=data_dir)
    try:
        query = await provider.embed([QUERY], input_type="query")
        by_hand = await provider.embed([QUERY_PROMPT + QUERY])
        document = await provider.embed([QUERY])
    finally:
        await provider.aclose()
    np.testing.assert_allclose(query.vectors, by_hand.vectors, atol=1e-5)
    assert not np.allclose(query.vectors, document.vectors, atol=1e-3)


def test_a_model_names_its_document_prompt_as_sentence_transformers_does(tmp_path: Path) -> None:
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: ", "classification": "x"}})
    )
    assert model_prompts(tmp_path) == Prompts("query: ", "passage: ", "query: ", "passage: ")
    assert model_prompts(tmp_path / "none") == Prompts()  # no config: no prompts
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": ["query: "]}))
    with pytest.raises(ConfigurationError, match="prompts"):
        model_prompts(tmp_path)


def test_every_window_of_a_split_text_starts_with_its_prompt() -> None:
    prompt = [7, 8, 9]
    ids = [101, *prompt, *range(1000, 1020), 102]
    plan = plan_windows([ids], specials=(1, 1), max_length=12, policy="split", overlap=2, prompt_ids=prompt)
    assert len(plan.windows) > 1
    assert all(w.ids[1:4] == prompt and w.ids[0] == 101 and w.ids[-1] == 102 for w in plan.windows)
    # every token of the text is seen, and weights count the text's own tokens, not the prompt's
    seen = {token for w in plan.windows for token in w.ids[4:-1]}
    assert seen == set(range(1000, 1020)) and all(w.weight == len(w.ids) - 5 for w in plan.windows)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIGNAL_HUB_LOCAL_TRUST_REMOTE_CODE": "maybe"}, "SIGNAL_HUB_LOCAL_TRUST_REMOTE_CODE must be 1 or 0"),
        ({"SIGNAL_HUB_LOCAL_MODEL_SHA256": "abc"}, "SIGNAL_HUB_LOCAL_MODEL_SHA256 must be the 64 hex digits"),
    ],
)
def test_bad_local_variables_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        LocalOptions.from_env(env)


async def test_a_pinned_sha256_that_the_weights_do_not_have_fails_the_first_call(
    data_dir: Path, prompted: Path
) -> None:
    settings = env_settings(
        data_dir,
        SIGNAL_HUB_LOCAL_MODEL="prompted-mini",
        SIGNAL_HUB_LOCAL_MODELS=f"prompted-mini={prompted}",
        SIGNAL_HUB_LOCAL_MODEL_SHA256="0" * 64,
    )
    provider = LocalProvider.from_settings(settings)
    with pytest.raises(ConfigurationError, match=r"not the pinned weights.*SIGNAL_HUB_LOCAL_MODEL_SHA256"):
        await provider.embed(["x"])


# the long-text mode is part of the space (issue 25)

LONG = "\n".join(f"def handler_{i}(event):\n    return event.payload['field_{i}'] * {i}" for i in range(60))


@pytest.mark.parametrize("order", [("truncate", "split"), ("split", "truncate")])
async def test_truncated_and_split_vectors_never_share_a_cache_entry(data_dir: Path, order: tuple[str, str]) -> None:
    results = []
    for mode in order:
        async with EmbeddingService(settings=Settings(data_dir=data_dir, local_long_texts=mode)) as service:  # type: ignore[arg-type]
            results.append((await service.embed([LONG]), await service.embed([LONG])))
    by_mode = dict(zip(order, results, strict=True))
    (truncated, truncated_again), (split, split_again) = by_mode["truncate"], by_mode["split"]
    assert (truncated.cached, split.cached) == (0, 0)  # the second mode embedded again
    assert (truncated_again.cached, split_again.cached) == (1, 1)  # and each mode finds its own
    assert truncated.truncated and not split.truncated
    assert float(truncated.vectors[0] @ split.vectors[0]) < 0.99
    # The default mode keeps the space (and the cache) it always had.
    assert truncated.space == "local:all-MiniLM-L6-v2:384:l2"
    assert split.space == "local:all-MiniLM-L6-v2:384:l2:split64"


async def test_the_split_overlap_is_part_of_the_space(shared_data_dir: Path) -> None:
    spaces = {
        LocalProvider(long_texts="split", split_overlap=overlap, data_dir=shared_data_dir).space for overlap in (0, 32)
    }
    assert spaces == {"local:all-MiniLM-L6-v2:384:l2:split0", "local:all-MiniLM-L6-v2:384:l2:split32"}


# models named by a Hugging Face id

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str) -> Path:
    """A Hugging Face cache holding one snapshot of `repo_id` (the prompted MiniLM), as a download leaves it."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return prompted_model(repo / "snapshots" / REVISION)


async def test_a_hugging_face_id_in_the_hub_cache_is_used_without_the_network(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    snapshot = hub_cache(tmp_path / "hub", "example-org/prompted-mini")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked
    settings = env_settings(data_dir, SIGNAL_HUB_LOCAL_MODEL="example-org/prompted-mini")
    async with EmbeddingService(settings=settings) as service:
        query = await service.embed([QUERY], input_type="query")
        by_hand = await service.embed([QUERY_PROMPT + QUERY])
    assert service.provider._path == snapshot  # type: ignore[attr-defined]
    assert query.space == "local:example-org/prompted-mini:384:l2:query"
    np.testing.assert_allclose(query.vectors, by_hand.vectors, atol=1e-6)


def test_a_hugging_face_id_that_cannot_be_downloaded_stops_the_server_with_one_line(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as closed:  # a port nothing listens on: the download is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1]),
        "SIGNAL_HUB_DATA_DIR": str(tmp_path / "data"),
        "SIGNAL_HUB_LOCAL_MODEL": "example-org/code-model",
        "HF_HUB_CACHE": str(tmp_path / "empty-hub"),
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    env.pop("HF_HUB_OFFLINE", None)
    started = subprocess.run(
        [sys.executable, "-m", "server"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = started.stderr.strip().splitlines()
    assert started.returncode == 2 and started.stdout == ""
    assert len(lines) == 1, started.stderr
    assert "example-org/code-model" in lines[0] and "SIGNAL_HUB_LOCAL_MODELS=example-org/code-model=DIR" in lines[0]


# jobs and the command line


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line["space"] for line in lines], np.asarray([line["embedding"] for line in lines])


async def test_a_job_embeds_as_its_input_type_over_mcp(prompted_settings: Settings, project: Path) -> None:
    import anyio

    (project / "queries.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(CODE)))
    async with Client(build_server(prompted_settings), read_timeout_seconds=300) as client:  # jobs read the roots
        started = await call(
            client, "start_embedding_job", input="queries.jsonl", output="queries.out.jsonl", input_type="query"
        )
        assert started["space"] == "local:prompted-mini:384:l2:query"
        with anyio.fail_after(300):
            while (status := await call(client, "job_status", job_id=started["job_id"]))["status"] in (
                "queued",
                "running",
            ):
                await anyio.sleep(0.05)
        direct = await call(client, "embed_batch", texts=CODE, input_type="query")
    assert status["status"] == "done"
    spaces, vectors = read_vectors(project / "queries.out.jsonl")
    assert set(spaces) == {"local:prompted-mini:384:l2:query"} and direct["cached"] == 2
    np.testing.assert_allclose(vectors, direct["embeddings"], atol=1e-6)


def test_a_job_resumes_as_the_input_type_its_space_names() -> None:
    from providers.base import input_type_of

    assert input_type_of("local:prompted-mini:384:l2:query") == "query"
    assert input_type_of("local:all-MiniLM-L6-v2:384:l2:split64:query~1a2b3c4d") == "query"
    assert input_type_of("voyage:voyage-code-3:1024:l2:document") == "document"
    assert input_type_of("local:all-MiniLM-L6-v2:384:l2") == "document"


async def test_the_embed_command_takes_the_input_type(prompted_settings: Settings, tmp_path: Path) -> None:
    import argparse

    import anyio.to_thread

    from server.commands.embed import add_commands, run_embed

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(CODE)))
    for kind in ("query", "document"):
        args = parser.parse_args(["embed", str(chunks), "-o", str(tmp_path / f"{kind}.jsonl"), "--input-type", kind])
        assert await anyio.to_thread.run_sync(run_embed, args, prompted_settings) == 0
    query_spaces, queries = read_vectors(tmp_path / "query.jsonl")
    document_spaces, documents = read_vectors(tmp_path / "document.jsonl")
    assert set(query_spaces) == {"local:prompted-mini:384:l2:query"}
    assert set(document_spaces) == {"local:prompted-mini:384:l2:document"}
    by_hand = await LocalProvider.from_settings(prompted_settings).embed([QUERY_PROMPT + text for text in CODE])
    np.testing.assert_allclose(queries, by_hand.vectors, atol=1e-6)
    assert not np.allclose(queries, documents, atol=1e-3)


def test_a_trusted_model_gets_the_code_repository_its_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from providers.local_model.hub import hub_model_directory, is_hub_id

    snapshot = hub_cache(tmp_path / "hub", "example-org/custom-model")
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "example-org/custom-code--modeling.CustomModel"}
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    assert hub_model_directory("example-org/custom-model", trust_remote_code=False) == snapshot
    with pytest.raises(ConfigurationError, match="'example-org/custom-code' is not on this machine"):
        hub_model_directory("example-org/custom-model", trust_remote_code=True)  # its code is fetched too
    code = tmp_path / "hub" / "models--example-org--custom-code"
    (code / "refs").mkdir(parents=True)
    (code / "refs" / "main").write_text(REVISION)
    (code / "snapshots" / REVISION).mkdir(parents=True)
    (code / "snapshots" / REVISION / "modeling.py").write_text("class CustomModel: ...\n")
    assert hub_model_directory("example-org/custom-model", trust_remote_code=True) == snapshot
    assert is_hub_id("example-org/custom-model") and not is_hub_id(str(snapshot)) and not is_hub_id("a/b/c")


async def test_the_ray_engine_refuses_a_query_job_before_any_work(prompted_settings: Settings) -> None:
    from providers.jobs.engine import EngineJob, build_engine
    from providers.jobs.pipeline import Tally

    provider = LocalProvider.from_settings(prompted_settings)
    engine = build_engine("ray", prompted_settings, lambda name: provider)
    job = EngineJob("queries", "local", provider.space_for("query"), input_type="query")
    with pytest.raises(InputError, match="run this job in-process"):
        await engine.run(job, [], None, Tally(), lambda done: None)  # type: ignore[arg-type]


LATER_MODEL = """
import asyncio, os, sys
from pathlib import Path
from providers.errors import ConfigurationError
from providers.local import LocalProvider
from providers.local_model.hub import hub_model_directory

asyncio.run(LocalProvider(data_dir=Path(sys.argv[1])).embed(["x"]))  # a load makes the process offline for models
assert os.environ["HF_HUB_OFFLINE"] == "1"
try:
    hub_model_directory("example-org/later-model", trust_remote_code=False)
except ConfigurationError as exc:
    print(exc)
"""


def test_a_model_switched_to_after_a_load_may_still_be_downloaded(shared_data_dir: Path, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HF_HUB_CACHE": str(tmp_path / "hub")}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    ran = subprocess.run(
        [sys.executable, "-c", LATER_MODEL, str(shared_data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    # The download was tried (and refused by the closed port), not skipped as "offline".
    assert "could not be downloaded" in ran.stdout and "outgoing traffic has been disabled" not in ran.stdout
