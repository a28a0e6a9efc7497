from dataclasses import replace
from pathlib import Path

import pytest

from providers import ConfigurationError, EmbeddingService, Settings
from providers import settings as settings_module
from providers.local import DEFAULT_BATCH_SIZES, LocalProvider
from providers.local_model.options import LocalOptions
from providers.openai import OpenAIOptions, OpenAIProvider, openai_options
from providers.remote.batching import RequestLimits
from providers.service.facade import PROVIDER_FACTORIES


def test_defaults_use_the_local_model_and_no_key() -> None:
    settings = Settings.from_env({})
    assert settings.provider == "local"
    assert settings.local_model == "all-MiniLM-L6-v2"
    assert settings.openai_api_key is None
    assert settings.data_dir is None
    assert settings == Settings()


def test_the_public_names_are_pinned() -> None:
    assert settings_module.__all__ == ["Budget", "InputLimits", "Settings"]


def test_environment_is_read_at_the_edge() -> None:
    settings = Settings.from_env(
        {
            "SIGNAL_HUB_PROVIDER": " OpenAI ",
            "SIGNAL_HUB_DATA_DIR": "/tmp/signal-hub",
            "SIGNAL_HUB_LOCAL_MODELS": "mini=/models/mini, other=/models/other",
            "SIGNAL_HUB_LOCAL_BATCH_SIZE": "16",
            "OPENAI_API_KEY": "sk-secret-value",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "SIGNAL_HUB_PRICES": "text-embedding-3-small=0.025, my-model=0",
            "SIGNAL_HUB_BUDGET_SOFT_USD": "0.5",
            "SIGNAL_HUB_BUDGET_HARD_USD": " 2 ",
            "SIGNAL_HUB_CIRCUIT_COOLDOWN_S": "2.5",
        }
    )
    assert settings.provider == "openai"
    assert settings.prices == {"text-embedding-3-small": 0.025, "my-model": 0.0}
    assert (settings.budget.soft_usd, settings.budget.hard_usd, settings.fallback.cooldown_s) == (0.5, 2.0, 2.5)
    assert settings.data_dir == Path("/tmp/signal-hub")
    assert settings.local_models == {"mini": Path("/models/mini"), "other": Path("/models/other")}
    assert settings.local_batch_size == 16
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"


def test_the_api_key_never_shows_in_the_repr() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-secret-value"})
    assert settings.openai_api_key == "sk-secret-value"
    assert "sk-secret-value" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIGNAL_HUB_LOCAL_MODELS": "no-equals-sign"}, "is not name=/path/to/model"),
        ({"SIGNAL_HUB_LOCAL_MODELS": "=/path"}, "is not name=/path/to/model"),
        ({"SIGNAL_HUB_PRICES": "my-model=-0.1"}, "SIGNAL_HUB_PRICES entry my-model must be a non-negative number"),
        ({"SIGNAL_HUB_PRICES": "my-model"}, "is not model=usd_per_1M_tokens"),
    ],
)
def test_bad_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


POSITIVE_INTEGER = "a positive integer"


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("SIGNAL_HUB_LOCAL_BATCH_SIZE", "0", POSITIVE_INTEGER),
        ("SIGNAL_HUB_LOCAL_BATCH_SIZE", "many", POSITIVE_INTEGER),
        ("SIGNAL_HUB_LOCAL_BACKEND", "openvino", "one of: auto, torch, onnx, onnx-int8"),
        ("SIGNAL_HUB_LOCAL_LONG_TEXTS", "chunk", "one of: truncate, split"),
        ("SIGNAL_HUB_LOCAL_SPLIT_OVERLAP", "-1", "zero or a positive integer"),
        ("SIGNAL_HUB_LOCAL_SPLIT_OVERLAP", "half", "zero or a positive integer"),
        ("SIGNAL_HUB_LOCAL_THREADS", "0", POSITIVE_INTEGER),
        ("SIGNAL_HUB_LOCAL_BATCH_PRIORITY", "low", "one of: idle, normal"),
        ("SIGNAL_HUB_OPENAI_RPM", "0", "a positive number of requests per minute"),
        ("SIGNAL_HUB_OPENAI_RPM", "lots", "a positive number of requests per minute"),
        ("SIGNAL_HUB_OPENAI_TPM", "-5", "a positive number of tokens per minute"),
        ("SIGNAL_HUB_OPENAI_TPM", "inf", "a positive number of tokens per minute"),
        ("SIGNAL_HUB_OPENAI_CONCURRENCY", "0", POSITIVE_INTEGER),
        ("SIGNAL_HUB_OPENAI_CONCURRENCY", "2.5", POSITIVE_INTEGER),
        ("SIGNAL_HUB_OPENAI_TIMEOUT_S", "0", "a positive number of seconds"),
        ("SIGNAL_HUB_OPENAI_TIMEOUT_S", "nan", "a positive number of seconds"),
        ("SIGNAL_HUB_OPENAI_MAX_ATTEMPTS", "0", POSITIVE_INTEGER),
        ("SIGNAL_HUB_OPENAI_MAX_RETRY_S", "-1", "a positive number of seconds"),
        ("SIGNAL_HUB_OPENAI_OVERLONG", "shorten", "one of: truncate, error"),
        ("SIGNAL_HUB_OPENAI_MAX_INPUTS", "0", POSITIVE_INTEGER),
        ("SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS", "x", POSITIVE_INTEGER),
        ("SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS", "0", POSITIVE_INTEGER),
        ("SIGNAL_HUB_CIRCUIT_COOLDOWN_S", "0", "a positive number of seconds"),
        ("SIGNAL_HUB_BUDGET_SOFT_USD", "-1", "a non-negative number of US dollars"),
        ("SIGNAL_HUB_BUDGET_HARD_USD", "ten", "a non-negative number of US dollars"),
        ("SIGNAL_HUB_BUDGET_HARD_USD", "nan", "a non-negative number of US dollars"),
        ("SIGNAL_HUB_CIRCUIT_FAILURES", "none", POSITIVE_INTEGER),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_what_it_accepts(
    variable: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable} must be {accepted}")
    assert repr(value) in str(caught.value)


def test_a_text_limit_over_the_request_limit_names_both_variables() -> None:
    # A compatible endpoint with a 4,096-token request cap: the 8,192-token default per text cannot fit.
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS": "4096"})
    assert "SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS (8192) cannot exceed SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS (4096)" in str(
        caught.value
    )
    assert "at most 4096" in str(caught.value)
    limits = openai_options(
        Settings.from_env(
            {"SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS": "4096", "SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS": "4096"}
        )
    ).limits
    assert limits == RequestLimits(max_inputs=2048, max_input_tokens=4096, max_request_tokens=4096)


# local settings


def test_local_settings_default_to_the_backends_own_choices() -> None:
    settings = Settings.from_env({})
    assert settings.local_batch_size is None  # the backend's measured best, not one number for all
    assert settings.local_backend == "auto"
    assert settings.local_long_texts == "truncate"
    assert settings.local_split_overlap == 64
    assert settings.local_threads is None
    assert settings.local_batch_priority == "idle"


def test_local_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "SIGNAL_HUB_LOCAL_BACKEND": " ONNX-int8 ",
            "SIGNAL_HUB_LOCAL_LONG_TEXTS": "Split",
            "SIGNAL_HUB_LOCAL_SPLIT_OVERLAP": "0",
            "SIGNAL_HUB_LOCAL_THREADS": "2",
            "SIGNAL_HUB_LOCAL_BATCH_SIZE": "8",
            "SIGNAL_HUB_LOCAL_BATCH_PRIORITY": "Normal",
        }
    )
    assert settings.local_backend == "onnx-int8"
    assert settings.local_long_texts == "split"
    assert settings.local_split_overlap == 0
    assert settings.local_threads == 2
    assert settings.local_batch_size == 8  # 8 is a choice now, not "unset"
    assert settings.local_batch_priority == "normal"


def test_empty_local_settings_count_as_unset() -> None:
    names = ["BACKEND", "LONG_TEXTS", "SPLIT_OVERLAP", "THREADS", "BATCH_SIZE"]
    settings = Settings.from_env({f"SIGNAL_HUB_LOCAL_{name}": "" for name in names})
    assert settings.provider_options == {"local": LocalOptions()}  # the local provider's own variables: none set
    assert replace(settings, provider_options={}) == Settings()


@pytest.mark.anyio
@pytest.mark.slow
async def test_local_settings_reach_the_model(shared_data_dir: Path) -> None:
    settings = Settings.from_env(
        {
            "SIGNAL_HUB_DATA_DIR": str(shared_data_dir),
            "SIGNAL_HUB_DEVICE": "cpu",
            "SIGNAL_HUB_LOCAL_BACKEND": "onnx-int8",
            "SIGNAL_HUB_LOCAL_THREADS": "1",
            "SIGNAL_HUB_LOCAL_BATCH_SIZE": "8",
        }
    )
    provider = PROVIDER_FACTORIES["local"](settings, None, None)
    assert isinstance(provider, LocalProvider)
    await provider.embed([f"def f{i}(x): return x + {i}" for i in range(10)])
    assert provider.runtime is not None
    assert (provider.runtime.backend, provider.runtime.threads, provider.runtime.batch_size) == ("onnx-int8", 1, 8)
    assert provider.model_calls == 2  # 10 windows in calls of 8 and 2


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize(("backend", "batch_size"), [("auto", 1), ("torch", 8)])
async def test_an_unset_batch_size_is_the_backends_measured_best(
    shared_data_dir: Path, backend: str, batch_size: int
) -> None:
    settings = Settings.from_env(
        {"SIGNAL_HUB_DATA_DIR": str(shared_data_dir), "SIGNAL_HUB_DEVICE": "cpu", "SIGNAL_HUB_LOCAL_BACKEND": backend}
    )
    provider = PROVIDER_FACTORIES["local"](settings, None, None)
    assert isinstance(provider, LocalProvider)
    await provider.embed(["def f(): pass"])
    assert provider.runtime is not None
    assert provider.runtime.batch_size == DEFAULT_BATCH_SIZES[provider.runtime.backend] == batch_size


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize(("overlap", "tokens"), [("0", 254 + 146 + 4), ("64", 254 + 210 + 4)])
async def test_long_text_settings_reach_the_model(shared_data_dir: Path, overlap: str, tokens: int) -> None:
    # "word" is one token: 400 of them are two windows of at most 254 own tokens, sharing `overlap`.
    env = {"SIGNAL_HUB_DATA_DIR": str(shared_data_dir), "SIGNAL_HUB_DEVICE": "cpu"}
    split = PROVIDER_FACTORIES["local"](
        Settings.from_env({**env, "SIGNAL_HUB_LOCAL_LONG_TEXTS": "split", "SIGNAL_HUB_LOCAL_SPLIT_OVERLAP": overlap}),
        None,
        None,
    )
    result = await split.embed(["word " * 400])
    assert (result.truncated, result.tokens) == ({}, tokens)
    truncated = await PROVIDER_FACTORIES["local"](Settings.from_env(env), None, None).embed(["word " * 400])
    assert truncated.truncated == {0: 146}


# OpenAI settings

OPENAI_ENV = {
    "SIGNAL_HUB_OPENAI_RPM": "3000",
    "SIGNAL_HUB_OPENAI_TPM": "1000000",
    "SIGNAL_HUB_OPENAI_CONCURRENCY": "4",
    "SIGNAL_HUB_OPENAI_TIMEOUT_S": "12.5",
    "SIGNAL_HUB_OPENAI_MAX_ATTEMPTS": "3",
    "SIGNAL_HUB_OPENAI_MAX_RETRY_S": "30",
    "SIGNAL_HUB_OPENAI_OVERLONG": " Error ",
    "SIGNAL_HUB_OPENAI_MAX_INPUTS": "32",
    "SIGNAL_HUB_OPENAI_MAX_INPUT_TOKENS": "512",
    "SIGNAL_HUB_OPENAI_MAX_REQUEST_TOKENS": "4096",
}


def test_openai_settings_are_read_from_the_environment() -> None:
    assert openai_options(Settings.from_env(OPENAI_ENV)) == OpenAIOptions(
        rpm=3000.0,
        tpm=1_000_000.0,
        concurrency=4,
        request_timeout=12.5,
        max_attempts=3,
        max_retry_seconds=30.0,
        overlong="error",
        limits=RequestLimits(max_inputs=32, max_input_tokens=512, max_request_tokens=4096),
    )


def test_each_endpoint_limit_can_be_lowered_alone() -> None:
    assert openai_options(Settings.from_env({"SIGNAL_HUB_OPENAI_MAX_INPUTS": "96"})).limits == RequestLimits(
        max_inputs=96
    )


def test_empty_openai_settings_count_as_unset() -> None:
    assert openai_options(Settings.from_env(dict.fromkeys(OPENAI_ENV, ""))) == OpenAIOptions()


@pytest.mark.anyio
async def test_the_openai_factory_builds_the_configured_options(tmp_path: Path) -> None:
    settings = Settings.from_env({**OPENAI_ENV, "SIGNAL_HUB_DATA_DIR": str(tmp_path)})
    async with EmbeddingService("openai", settings=settings) as service:
        provider = service.get_provider("openai")
        assert isinstance(provider, OpenAIProvider)
        assert provider.options == openai_options(settings)  # as read from the environment (tested above)
        assert (provider.limiter.rpm, provider.limiter.tpm) == (3000.0, 1_000_000.0)
        service.switch_provider("openai", "text-embedding-3-large", dimensions=256)
        shortened = service.provider
        assert isinstance(shortened, OpenAIProvider)
        # The call's dimensions, the environment's packing and pacing.
        assert shortened.options == replace(provider.options, dimensions=256)


@pytest.mark.anyio
async def test_unconfigured_openai_settings_are_the_providers_defaults(tmp_path: Path) -> None:
    async with EmbeddingService("openai", settings=Settings(data_dir=tmp_path)) as service:
        provider = service.get_provider("openai")
        assert isinstance(provider, OpenAIProvider)
        assert provider.options == OpenAIOptions()


def test_a_placeholder_the_host_did_not_expand_counts_as_unset() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "${OPENAI_API_KEY}"})
    assert settings.openai_api_key is None
