"""Choosing a provider or model: a switch is all or nothing, and a model named in a call is honoured or refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from mcp import Client

from providers import ConfigurationError, EmbeddingService, Settings
from server import build_server

pytestmark = pytest.mark.anyio

MISSING = Path("/nonexistent")


@pytest.fixture
def broken_settings(settings: Settings) -> Settings:
    """The packaged model is the default; model "x" points at a directory that does not exist."""
    return replace(settings, local_models={"x": MISSING})


async def test_a_failed_switch_leaves_the_active_provider_as_it_was(broken_settings: Settings) -> None:
    async with EmbeddingService(settings=broken_settings) as service:
        with pytest.raises(ConfigurationError, match="/nonexistent"):
            service.switch_provider("local", "x")
        assert (service.provider.name, service.provider.model) == ("local", "all-MiniLM-L6-v2")
        assert service.switch_provider("local").previous_model == "all-MiniLM-L6-v2"
        estimate = await service.estimate_cost(["def f(): pass"])
        assert estimate.model == "all-MiniLM-L6-v2"


async def test_switching_to_a_provider_whose_default_model_is_broken_does_not_switch(settings: Settings) -> None:
    broken_default = replace(settings, provider="openai", local_model="x", local_models={"x": MISSING})
    async with EmbeddingService(settings=broken_default) as service:
        with pytest.raises(ConfigurationError, match="/nonexistent"):
            service.switch_provider("local")
        assert service.provider.name == "openai"


def test_a_broken_default_model_is_refused_when_the_service_is_built(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match=r"local model 'x'.*/nonexistent"):
        EmbeddingService(settings=replace(settings, local_model="x", local_models={"x": MISSING}))


def test_a_model_directory_without_weights_is_refused(settings: Settings, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    service = EmbeddingService(settings=replace(settings, local_models={"empty": model}))
    with pytest.raises(ConfigurationError, match=r"no model\.safetensors"):
        service.switch_provider("local", "empty")
    assert service.provider.model == "all-MiniLM-L6-v2"
    service.ledger.close()


@pytest.mark.slow
async def test_a_failed_switch_over_mcp_leaves_later_calls_working(broken_settings: Settings) -> None:
    async with Client(build_server(broken_settings), read_timeout_seconds=120) as client:
        refused = await client.call_tool("switch_provider", {"provider": "local", "model": "x"})
        assert refused.is_error
        assert "/nonexistent" in refused.content[0].text
        with anyio.fail_after(120):
            embedded = await client.call_tool("embed_text", {"text": "def calculate_total(items):"})
        assert not embedded.is_error, embedded.content
        assert embedded.structured_content["model"] == "all-MiniLM-L6-v2"


async def test_an_estimate_prices_the_model_it_names(settings: Settings) -> None:
    async with EmbeddingService(settings=replace(settings, provider="openai")) as service:
        small = await service.estimate_cost(["def calculate_total(items):"])
        large = await service.estimate_cost(["def calculate_total(items):"], model="text-embedding-3-large")
        assert (small.model, large.model) == ("text-embedding-3-small", "text-embedding-3-large")
        assert large.tokens == small.tokens
        assert large.usd == pytest.approx(large.tokens * 0.13 / 1e6)
        assert large.batch_usd == pytest.approx(large.usd / 2)  # the Batch API engine's price beside it
        assert service.provider.model == "text-embedding-3-small"  # an estimate switches nothing


@pytest.mark.parametrize(
    ("provider", "refusal"), [("openai", "unknown OpenAI model 'bogus'"), ("local", "unknown local model 'bogus'")]
)
async def test_an_estimate_refuses_a_model_the_active_provider_does_not_have(
    settings: Settings, provider: str, refusal: str
) -> None:
    async with EmbeddingService(settings=replace(settings, provider=provider)) as service:
        with pytest.raises(ConfigurationError, match=refusal):
            await service.estimate_cost(["x"], model="bogus")


async def test_estimate_cost_over_mcp_honours_or_refuses_the_model(settings: Settings) -> None:
    async with Client(build_server(replace(settings, provider="openai"))) as client:
        large = await client.call_tool("estimate_cost", {"texts": ["abc"], "model": "text-embedding-3-large"})
        assert large.structured_content["model"] == "text-embedding-3-large"
        assert large.structured_content["batch_usd"] == pytest.approx(large.structured_content["usd"] / 2)
        assert "through the Batch API" in large.content[0].text
        bogus = await client.call_tool("estimate_cost", {"texts": ["abc"], "model": "bogus"})
        assert bogus.is_error and "unknown OpenAI model 'bogus'" in bogus.content[0].text
