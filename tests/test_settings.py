from pathlib import Path

import pytest

from providers import ConfigurationError, Settings


def test_defaults_use_the_local_model_and_no_key() -> None:
    settings = Settings.from_env({})
    assert settings.provider == "local"
    assert settings.local_model == "all-MiniLM-L6-v2"
    assert settings.openai_api_key is None
    assert settings.data_dir is None


def test_environment_is_read_at_the_edge() -> None:
    settings = Settings.from_env(
        {
            "SIGNAL_HUB_PROVIDER": " OpenAI ",
            "SIGNAL_HUB_DATA_DIR": "/tmp/signal-hub",
            "SIGNAL_HUB_LOCAL_MODELS": "mini=/models/mini, other=/models/other",
            "SIGNAL_HUB_LOCAL_BATCH_SIZE": "16",
            "OPENAI_API_KEY": "sk-secret-value",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        }
    )
    assert settings.provider == "openai"
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
        ({"SIGNAL_HUB_LOCAL_BATCH_SIZE": "0"}, "must be a positive integer"),
        ({"SIGNAL_HUB_LOCAL_BATCH_SIZE": "many"}, "must be a positive integer"),
    ],
)
def test_bad_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_a_placeholder_the_host_did_not_expand_counts_as_unset() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "${OPENAI_API_KEY}"})
    assert settings.openai_api_key is None
