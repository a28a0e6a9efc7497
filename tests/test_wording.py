"""What the tools and the CLI say reads right: plurals, separators, money that is not zero, lines above the bar."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from mcp import Client

from providers import Settings
from server import build_server
from server.wording import count, format_usd
from tests.loopback_openai import LoopbackOpenAI
from tests.test_batch_cli import embed, write_jsonl
from tests.test_server import fake_server

pytestmark = pytest.mark.anyio

UNSEPARATED = re.compile(r"(?<![\d.,$#])\d{4,}(?![\d.])")
"""A count of 1,000 or more written without separators (not a decimal, an amount or an index)."""


def test_counts_and_money_read_naturally() -> None:
    assert [count(n, "text") for n in (0, 1, 2, 12_345)] == ["0 texts", "1 text", "2 texts", "12,345 texts"]
    assert count(1, "batch", "batches") == "1 batch" and count(3, "batch", "batches") == "3 batches"
    amounts = (0, 3.6e-9, 4e-8, 1.23e-5, 0.5, 1234.5)
    shown = ["$0.00", "$0.0000000036", "$0.000000040", "$0.000012", "$0.500000", "$1,234.500000"]
    assert [format_usd(usd) for usd in amounts] == shown


async def test_tool_texts_say_1_text_and_1_group_separate_thousands_and_never_show_zero_for_a_cost(
    settings: Settings,
) -> None:
    priced = replace(settings, prices={"fake-small": 0.001})  # $0.001 per 1M tokens: calls cost about 1e-9
    long_text = " ".join(["word"] * 1500)
    async with Client(fake_server(priced)) as client:
        one = await client.call_tool("embed_batch", {"texts": ["def f(): pass"]})
        group = await client.call_tool("find_duplicates", {"texts": ["same text", "same text", "other words here"]})
        ranked = await client.call_tool("rank_texts", {"query": "q", "texts": ["only one"]})
        estimate = await client.call_tool("estimate_cost", {"texts": [long_text]})
        cost = await client.call_tool("get_cost", {})
    texts = {name: r.content[0].text for name, r in [("one", one), ("group", group), ("ranked", ranked)]}
    assert texts["one"].startswith("Embedded 1 text with fake/fake-small")
    assert texts["group"] == "1 group of near-duplicates among 3 texts."
    assert texts["ranked"].startswith("Ranked 1 text;")
    said = estimate.content[0].text
    assert re.match(r"1 text ≈ \d,\d{3} tokens ≈ \$0\.00000\d", said), said
    spend = cost.content[0].text
    usd = cost.structured_content["total_usd"]
    assert usd > 0 and "$0.000000 " not in spend + " " and "$0.000000," not in spend and "$0.000000." not in spend
    assert spend.startswith(f"Total {format_usd(usd)} ("), spend
    for text in [*texts.values(), said, spend]:
        assert not UNSEPARATED.search(text), text


async def test_list_jobs_separates_its_entries_with_one_stop(shared_data_dir: Path, project: Path) -> None:
    source = project / "chunks.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"def f{i}(): pass"}) + "\n" for i in range(3)))
    async with Client(build_server(Settings(data_dir=shared_data_dir, cache=False)), read_timeout_seconds=120) as c:
        for name in ("a.jsonl", "b.jsonl"):
            job = await c.call_tool("start_embedding_job", {"input": str(source), "output": name})
            assert not job.is_error, job.content
        with anyio.fail_after(120):
            while (listed := await c.call_tool("list_jobs", {})).structured_content["jobs"][0]["status"] != "done":
                await anyio.sleep(0.05)
    text = listed.content[0].text
    assert ".;" not in text and text.count("Job ") == 2
    assert re.fullmatch(r"Job \S+: done, 3/3 chunks \(0 cached\), \$0\.00\. Job \S+: \w+, .*\.", text), text


# --- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def openai(settings: Settings) -> Iterator[Settings]:
    with LoopbackOpenAI(api_key="sk-test") as server:
        yield replace(settings, provider="openai", openai_base_url=server.base_url, openai_api_key="sk-test")


def test_skipped_records_are_said_above_the_progress_bar_and_a_tiny_cost_is_not_zero(
    openai: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [{"id": 1, "text": "good"}, "oops", {"id": 2, "text": "fine"}]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    assert embed(openai, str(source), "--skip-invalid", "-o", str(tmp_path / "out.jsonl")) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.split("\n") if ": skipped " in line]
    assert len(skipped) == 1
    # What a terminal shows of the line: the text after its last carriage return.
    shown = skipped[0].rsplit("\r", 1)[-1]
    assert shown.startswith(f"signal-hub-embeddings: skipped {source} line 2: not valid JSON"), skipped
    summary = next(line for line in err.splitlines() if "embedded 2" in line)
    assert "2 tokens, $0.000000040;" in summary, summary  # $0.02 per 1M tokens: not "$0.000000"


@pytest.mark.slow
def test_the_first_run_on_a_new_data_directory_says_it_builds_the_onnx_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = Settings(data_dir=tmp_path / "new-data")  # no ONNX export yet
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "def f(): pass"}])
    assert embed(fresh, str(source), "-o", str(tmp_path / "out.jsonl")) == 0
    lines = [line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.split("\n")]
    building = next(i for i, line in enumerate(lines) if "building the local model's ONNX Runtime export" in line)
    assert lines[building].startswith("signal-hub-embeddings: building the local model's ONNX Runtime export (int8)")
    assert "once per data directory, about 20 s" in lines[building]
    assert building < next(i for i, line in enumerate(lines) if line.startswith("signal-hub-embeddings: wrote 1"))
