"""Settings: defaults, parsing from the environment, one clear `ConfigError` per invalid value.

Every test runs in an empty temporary directory (no stray `.env`) with the bot's settings
removed from the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from luka_bot.core.config import AVAILABLE_PROVIDERS, ConfigError, Settings, load_settings
from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback

OPENAI_KEY = "sk-test-SECRET-config-0123456789abcdef"
BOT_TOKEN = "123456789:AAHsecretTOKENsecretTOKENsecret_0123456"

SETTING_NAMES = (
    "BOT_TOKEN", "ADMIN_IDS", "TELEGRAM_API_URL", "DEFAULT_LANGUAGE", "LOG_LEVEL", "REDIS_URL", "REDIS_PREFIX",
    "OLLAMA_URL", "OLLAMA_MODEL_NAME", "OLLAMA_TIMEOUT", "OPENAI_API_KEY", "OPENAI_MODEL_NAME", "OPENAI_TIMEOUT",
    "OPENAI_BASE_URL", "AVAILABLE_PROVIDERS", "LLM_EXTRA_PROVIDERS", "LLM_CONNECT_TIMEOUT", "LLM_PREFERRED_TTL",
    "LLM_FAILURE_COOLDOWN", "HISTORY_MAX_MESSAGES", "HISTORY_TTL", "LLM_CONTEXT_WINDOWS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return tmp_path


# --- defaults ---------------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert list(settings.AVAILABLE_PROVIDERS) == ["ollama", "openai"]
    assert settings.AVAILABLE_PROVIDERS == AVAILABLE_PROVIDERS
    assert settings.LLM_PREFERRED_TTL == 1800
    assert settings.LLM_FAILURE_COOLDOWN == 300
    assert settings.OPENAI_API_KEY is None
    assert settings.BOT_TOKEN is None
    assert settings.REDIS_URL is None
    assert settings.ADMIN_IDS == []

    specs = settings.provider_specs()
    assert [s.name for s in specs] == ["ollama", "openai"]
    assert specs[0].models == ("gpt-oss", "llama3.2")
    assert specs[1].models == ("gpt-6.1-terra", "gpt-6-luna")
    assert specs[0].base_url == "http://localhost:11434/v1"
    assert specs[0].configured is True
    assert specs[1].configured is False  # no OPENAI_API_KEY
    assert specs[1].base_url == "https://api.openai.com/v1"


def test_default_provider_order_is_not_shared_between_settings() -> None:
    first = load_settings()
    first.AVAILABLE_PROVIDERS["ollama"].append("mutated")
    first.AVAILABLE_PROVIDERS.pop("openai")
    second = load_settings()
    assert list(second.AVAILABLE_PROVIDERS) == ["ollama", "openai"]
    assert second.AVAILABLE_PROVIDERS["ollama"] == ["gpt-oss", "llama3.2"]


def test_default_model_lists_are_not_shared_with_the_module_constant() -> None:
    first = load_settings()
    first.AVAILABLE_PROVIDERS["ollama"].append("mutated")
    try:
        assert AVAILABLE_PROVIDERS["ollama"] == ["gpt-oss", "llama3.2"]
    finally:
        if AVAILABLE_PROVIDERS["ollama"][-1] == "mutated":
            AVAILABLE_PROVIDERS["ollama"].pop()


# --- parsing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1, 2,3", "1,2,3", " 1 ,2 , 3 ", "1;2;3"])
def test_admin_ids_from_env(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ADMIN_IDS", raw)
    assert load_settings().ADMIN_IDS == [1, 2, 3]


def test_admin_ids_as_override() -> None:
    assert load_settings(ADMIN_IDS="1, 2,3").ADMIN_IDS == [1, 2, 3]
    assert load_settings(ADMIN_IDS=[4, 5]).ADMIN_IDS == [4, 5]
    assert load_settings(ADMIN_IDS="").ADMIN_IDS == []


async def test_available_providers_from_env_json_reorders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAILABLE_PROVIDERS", '{"openai": ["gpt-6-luna"], "ollama": ["llama3.2"]}')
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    settings = load_settings()
    assert list(settings.AVAILABLE_PROVIDERS) == ["openai", "ollama"]
    specs = settings.provider_specs()
    assert [s.name for s in specs] == ["openai", "ollama"]
    assert specs[0].models == ("gpt-6-luna",)
    assert specs[1].models == ("llama3.2",)

    fallback = create_llm_provider_fallback(settings)
    try:
        assert fallback.primary == "openai"
        stats = await fallback.get_provider_stats()
        assert stats["primary_provider"] == "openai"
        assert stats["fallback_provider"] == "ollama"
    finally:
        await fallback.aclose()


def test_single_provider_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAILABLE_PROVIDERS", '{"ollama": ["llama3.2"]}')
    assert [s.name for s in load_settings().provider_specs()] == ["ollama"]


@pytest.mark.parametrize("url", [
    "http://ollama.local:11434",
    "http://ollama.local:11434/",
    "http://ollama.local:11434/v1",
    "http://ollama.local:11434/v1/",
])
def test_ollama_url_gets_exactly_one_v1(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("OLLAMA_URL", url)
    base_url = load_settings().provider_specs()[0].base_url
    assert base_url == "http://ollama.local:11434/v1"
    assert base_url.count("/v1") == 1
    # the same through an override
    assert load_settings(OLLAMA_URL=url).provider_specs()[0].base_url == "http://ollama.local:11434/v1"


def test_model_name_settings_are_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODEL_NAME", "llama3.2")
    monkeypatch.setenv("OPENAI_MODEL_NAME", "gpt-6-luna")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    ollama, openai = load_settings().provider_specs()
    assert ollama.models == ("llama3.2", "gpt-oss")  # no duplicate
    assert openai.models == ("gpt-6-luna", "gpt-6.1-terra")  # no duplicate


def test_openai_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1/")
    monkeypatch.setenv("OPENAI_TIMEOUT", "12.5")
    openai = load_settings().provider_specs()[1]
    assert openai.configured is True
    assert openai.api_key is not None and openai.api_key.get_secret_value() == OPENAI_KEY
    assert openai.base_url == "http://127.0.0.1:9999/v1"
    assert openai.timeout == 12.5


def test_blank_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # `.env.example` style: `OPENAI_BASE_URL=` and `OPENAI_API_KEY=` left empty
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    monkeypatch.setenv("REDIS_URL", "  ")
    settings = load_settings()
    assert settings.OPENAI_API_KEY is None
    assert settings.REDIS_URL is None
    openai = settings.provider_specs()[1]
    assert openai.configured is False
    assert openai.base_url == "https://api.openai.com/v1"


def test_dotenv_in_working_directory_is_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("OLLAMA_URL=http://from-dotenv:11434\nLLM_FAILURE_COOLDOWN=120\n")
    settings = load_settings()
    assert settings.provider_specs()[0].base_url == "http://from-dotenv:11434/v1"
    assert settings.LLM_FAILURE_COOLDOWN == 120
    monkeypatch.setenv("LLM_FAILURE_COOLDOWN", "90")  # the environment wins over .env
    assert load_settings().LLM_FAILURE_COOLDOWN == 90


# --- invalid values -----------------------------------------------------------------------------------

INVALID_ENV = [
    pytest.param("AVAILABLE_PROVIDERS", '{"anthropic": ["claude"]}', id="unknown-provider"),
    pytest.param("AVAILABLE_PROVIDERS", "{}", id="empty-dict"),
    pytest.param("AVAILABLE_PROVIDERS", '{"ollama": []}', id="empty-model-list"),
    pytest.param("AVAILABLE_PROVIDERS", '{"ollama": ["llama3.2"], "openai": [""]}', id="blank-model-name"),
    pytest.param("AVAILABLE_PROVIDERS", '{"ollama": ["llama3.2"', id="malformed-json"),
    pytest.param("AVAILABLE_PROVIDERS", '["ollama", "openai"]', id="json-list"),
    pytest.param("LLM_FAILURE_COOLDOWN", "-5", id="negative-cooldown"),
    pytest.param("LLM_FAILURE_COOLDOWN", "soon", id="cooldown-not-a-number"),
    pytest.param("LLM_PREFERRED_TTL", "0", id="zero-ttl"),
    pytest.param("ADMIN_IDS", "abc", id="admin-ids-abc"),
    pytest.param("ADMIN_IDS", "1, two, 3", id="admin-ids-partly-bad"),
    pytest.param("OLLAMA_TIMEOUT", "0", id="zero-timeout"),
]


@pytest.mark.parametrize(("name", "value"), INVALID_ENV)
def test_invalid_env_value_raises_config_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert name in message
    assert "\n" not in message
    assert OPENAI_KEY not in message and BOT_TOKEN not in message
    assert excinfo.value.__cause__ is None or OPENAI_KEY not in str(excinfo.value.__cause__)


INVALID_OVERRIDES = [
    pytest.param("AVAILABLE_PROVIDERS", {"anthropic": ["claude"]}, id="unknown-provider"),
    pytest.param("AVAILABLE_PROVIDERS", {}, id="empty-dict"),
    pytest.param("AVAILABLE_PROVIDERS", {"ollama": []}, id="empty-model-list"),
    pytest.param("LLM_FAILURE_COOLDOWN", -1, id="negative-cooldown"),
    pytest.param("LLM_PREFERRED_TTL", 0, id="zero-ttl"),
    pytest.param("ADMIN_IDS", "abc", id="admin-ids-abc"),
]


@pytest.mark.parametrize(("name", "value"), INVALID_OVERRIDES)
def test_invalid_override_raises_config_error_naming_the_setting(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(OPENAI_API_KEY=OPENAI_KEY, BOT_TOKEN=BOT_TOKEN, **{name: value})
    message = str(excinfo.value)
    assert name in message
    assert OPENAI_KEY not in message and BOT_TOKEN not in message


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load_settings(LLM_PREFERRED_TTL=0)


def test_several_invalid_settings_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PREFERRED_TTL", "0")
    monkeypatch.setenv("ADMIN_IDS", "abc")
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "LLM_PREFERRED_TTL" in str(excinfo.value)
    assert "ADMIN_IDS" in str(excinfo.value)


@pytest.mark.parametrize("raw", [
    pytest.param('{"groq": {"base_url": "http://127.0.0.1:1/v1", "api_key": "%s", "timeout": -1}}', id="invalid"),
    pytest.param('{"groq": {"base_url": "http://127.0.0.1:1/v1", "api_key": "%s", ', id="malformed-json"),
])
def test_extra_provider_errors_do_not_leak_its_key(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LLM_EXTRA_PROVIDERS", raw % OPENAI_KEY)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "LLM_EXTRA_PROVIDERS" in str(excinfo.value)
    assert OPENAI_KEY not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_extra_provider_can_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_EXTRA_PROVIDERS", '{"groq": {"base_url": "http://127.0.0.1:1/v1/", "api_key": "%s"}}'
                       % OPENAI_KEY)
    monkeypatch.setenv("AVAILABLE_PROVIDERS", '{"groq": ["llama-3.1-8b"], "ollama": ["llama3.2"]}')
    groq, ollama = load_settings().provider_specs()
    assert (groq.name, groq.kind, groq.base_url, groq.models) == ("groq", "openai", "http://127.0.0.1:1/v1",
                                                                  ("llama-3.1-8b",))
    assert groq.configured is True
    assert groq.setting_hint == "LLM_EXTRA_PROVIDERS['groq']"  # what logs and alerts tell the operator to fix
    assert OPENAI_KEY not in repr(groq)


def test_secrets_never_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)
    settings = load_settings()
    assert isinstance(settings, Settings)
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.provider_specs())):
        assert OPENAI_KEY not in text
        assert BOT_TOKEN not in text
    assert settings.OPENAI_API_KEY is not None and settings.OPENAI_API_KEY.get_secret_value() == OPENAI_KEY
    assert settings.BOT_TOKEN is not None and settings.BOT_TOKEN.get_secret_value() == BOT_TOKEN


# --- `python -m luka_bot` on a bad configuration ------------------------------------------------------------


def _run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    return subprocess.run([sys.executable, "-m", "luka_bot"], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def test_bot_without_token_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    result = _run_bot(tmp_path, OPENAI_API_KEY=OPENAI_KEY)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "BOT_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr
    assert OPENAI_KEY not in result.stderr + result.stdout


def test_bot_with_malformed_available_providers_exits_2_naming_it(tmp_path: Path) -> None:
    result = _run_bot(tmp_path, BOT_TOKEN=BOT_TOKEN, OPENAI_API_KEY=OPENAI_KEY,
                      AVAILABLE_PROVIDERS='{"ollama": ["llama3.2"')
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AVAILABLE_PROVIDERS" in lines[0]
    assert "Traceback" not in result.stderr
    assert BOT_TOKEN not in result.stderr and OPENAI_KEY not in result.stderr



@pytest.mark.parametrize("value", ["0", "-2", "soon"])
def test_bad_hedge_delay_is_refused_naming_the_setting(value, monkeypatch):
    monkeypatch.setenv("LLM_HEDGE_DELAY", value)
    with pytest.raises(ConfigError, match="LLM_HEDGE_DELAY"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(("value", "expected"), [("2", "2"), (" AUTO ", "auto"), ("", None)])
def test_hedge_delay_accepts_seconds_and_auto(value, expected, monkeypatch):
    monkeypatch.setenv("LLM_HEDGE_DELAY", value)
    assert load_settings(_env_file=None).LLM_HEDGE_DELAY == expected


def test_max_cooldown_below_the_cooldown_is_refused(monkeypatch):
    monkeypatch.setenv("LLM_FAILURE_COOLDOWN", "600")
    monkeypatch.setenv("LLM_MAX_COOLDOWN", "300")
    with pytest.raises(ConfigError, match="LLM_MAX_COOLDOWN"):
        load_settings(_env_file=None)


# --- context windows -------------------------------------------------------------------------------------


async def test_context_windows_default_to_what_the_servers_do() -> None:
    ollama, openai = load_settings(OPENAI_API_KEY=OPENAI_KEY).provider_specs()
    assert [ollama.context_window(m) for m in ollama.models] == [4096, 4096], "Ollama's default num_ctx"
    assert [openai.context_window(m) for m in openai.models] == [None, None], "pydantic-ai knows OpenAI's"
    from plugins.llm_fallback.providers import ProviderClient

    clients = [ProviderClient(ollama), ProviderClient(openai)]
    windows = [model.context_window for client in clients for model in client.models.values()]
    for client in clients:
        await client.aclose()
    assert windows[:2] == [4096, 4096] and all(window and window >= 128_000 for window in windows[2:])


def test_context_windows_per_provider_and_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAILABLE_PROVIDERS", '{"ollama": ["gpt-oss", "llama3.2"], "lmstudio": ["qwen/qwen3.5-9b"]}')
    monkeypatch.setenv("LLM_EXTRA_PROVIDERS", '{"lmstudio": {"base_url": "http://127.0.0.1:1234/v1"}}')
    monkeypatch.setenv("LLM_CONTEXT_WINDOWS", '{"ollama": {"llama3.2": 32768}, "lmstudio": 8192}')
    ollama, lmstudio = load_settings().provider_specs()
    assert [ollama.context_window(m) for m in ollama.models] == [4096, 32768]
    assert lmstudio.context_window("qwen/qwen3.5-9b") == 8192


@pytest.mark.parametrize(("raw", "message"), [
    ('{"vllm": 8192}', "LLM_CONTEXT_WINDOWS: 'vllm' is not a provider of AVAILABLE_PROVIDERS (ollama, openai)"),
    ('{"ollama": {"llama3.3": 8192}}', "LLM_CONTEXT_WINDOWS: ollama/llama3.3 is not one of ollama's models"),
    ('{"ollama": 100}', "LLM_CONTEXT_WINDOWS: ollama: 100 tokens is less than 512"),
    ('{"ollama": "big"}', "LLM_CONTEXT_WINDOWS.ollama"),
    ("[4096]", "LLM_CONTEXT_WINDOWS: Input should be a valid dictionary"),
])
def test_a_bad_context_window_is_refused_naming_the_setting(raw: str, message: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CONTEXT_WINDOWS", raw)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert message in str(raised.value)
