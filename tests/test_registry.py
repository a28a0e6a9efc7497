"""The provider registry: every list of provider names comes from it, and bad settings are refused at start."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import pytest

from providers import ConfigurationError, Settings
from providers.registry import provider_names, provider_specs, provider_table
from providers.service.facade import PROVIDER_FACTORIES
from server.commands.embed import add_commands
from server.tools.app import ProviderName

README = Path(__file__).parent.parent / "README.md"


def test_every_declared_provider_is_registered_in_listing_order() -> None:
    names = provider_names()
    assert names[:2] == ("local", "openai")
    assert list(PROVIDER_FACTORIES) == list(names)
    assert all(spec.summary and spec.factory for spec in provider_specs())


def test_the_mcp_provider_argument_allows_exactly_the_registered_names() -> None:
    assert typing.get_args(ProviderName) == provider_names()


def test_the_command_line_offers_exactly_the_registered_names() -> None:
    subparsers = argparse.ArgumentParser().add_subparsers()
    add_commands(subparsers)
    embed = subparsers.choices["embed"]
    [provider] = [a for a in embed._actions if a.dest == "provider"]
    assert tuple(provider.choices or ()) == provider_names()


def test_the_readme_table_is_the_registry_table() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- providers:")
    block = text[text.index("\n", start) + 1 : text.index("<!-- /providers -->")]
    assert block.strip() == provider_table()


def test_an_unknown_name_in_the_fallback_chain_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match=r"SIGNAL_HUB_FALLBACK_CHAIN names unknown provider 'opneai'"):
        Settings.from_env({"SIGNAL_HUB_FALLBACK_CHAIN": "opneai,local"})
    assert Settings.from_env({"SIGNAL_HUB_FALLBACK_CHAIN": " OpenAI , local "}).fallback.chain == ("openai", "local")


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("sk-abc\n", "a newline at character 7"),
        ("sk-a bc", "whitespace at character 5"),
        ("sk-abcé", "non-ASCII or control character at character 7"),
    ],
)
def test_a_malformed_key_is_refused_at_start_by_name_and_never_echoed(key: str, what: str) -> None:
    with pytest.raises(ConfigurationError, match=what) as raised:
        Settings.from_env({"OPENAI_API_KEY": key})
    assert "OPENAI_API_KEY" in str(raised.value) and "sk-a" not in str(raised.value)


def test_an_unexpanded_placeholder_is_no_key_for_settings_and_for_the_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from providers.errors import AuthenticationError
    from providers.openai import OpenAIProvider

    assert Settings.from_env({"OPENAI_API_KEY": "${OPENAI_API_KEY:-}"}).openai_api_key is None
    monkeypatch.setenv("OPENAI_API_KEY", "${OPENAI_API_KEY:-}")
    with pytest.raises(AuthenticationError, match="set OPENAI_API_KEY"):
        OpenAIProvider()._client()


def test_a_malformed_key_passed_in_code_is_refused_before_any_request() -> None:
    from providers.openai import OpenAIProvider

    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY contains a non-ASCII"):
        OpenAIProvider(api_key="sk-“quoted”")._client()
