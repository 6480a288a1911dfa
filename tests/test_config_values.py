"""What a value means: blank is unset for every setting (environment, `.env`, overrides), addresses
are http(s) URLs, and `DEFAULT_LANGUAGE` is a language the bot ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from luka_bot.core.config import ConfigError, Settings, load_settings
from luka_bot.core.locale_files import SOURCE_LOCALES, shipped_languages

SETTINGS = list(Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return tmp_path


def _default(name: str) -> object:
    return getattr(load_settings(), name)


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "spaces"])
@pytest.mark.parametrize("name", SETTINGS)
def test_a_blank_value_in_the_environment_means_unset(monkeypatch: pytest.MonkeyPatch, name: str,
                                                      blank: str) -> None:
    expected = _default(name)
    monkeypatch.setenv(name, blank)
    assert getattr(load_settings(), name) == expected


@pytest.mark.parametrize("name", SETTINGS)
def test_a_blank_line_in_dotenv_means_unset(clean_env: Path, name: str) -> None:
    expected = _default(name)
    (clean_env / ".env").write_text(f"{name}=\n")
    assert getattr(load_settings(), name) == expected


@pytest.mark.parametrize("name", SETTINGS)
def test_a_blank_override_means_unset(name: str) -> None:
    assert getattr(load_settings(**{name: " "}), name) == _default(name)


def test_a_blank_ollama_url_is_the_default_address_not_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_URL", "")
    assert load_settings().provider_specs()[0].base_url == "http://localhost:11434/v1"


def test_a_blank_value_in_the_environment_hides_the_dotenv_value(clean_env: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment wins over `.env`, also when it says "unset" (as the docs say)."""
    (clean_env / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nWEBHOOK_PORT=9000\n")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("WEBHOOK_PORT", " ")
    settings = load_settings()
    assert settings.OPENAI_API_KEY is None and settings.WEBHOOK_PORT == 8080


@pytest.mark.parametrize("name", ["TELEGRAM_API_URL", "WEBHOOK_URL", "OLLAMA_URL", "OPENAI_BASE_URL"])
@pytest.mark.parametrize("value", ["localhost:11434", "ftp://host/", "http://", "user:SECRET@host"])
def test_an_address_must_be_an_http_url(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert f"{name}: must be an http:// or https:// URL" in message
    assert "SECRET" not in message


def test_an_extra_providers_base_url_must_be_an_http_url() -> None:
    with pytest.raises(ConfigError, match=r"LLM_EXTRA_PROVIDERS\.groq\.base_url: must be an http"):
        load_settings(LLM_EXTRA_PROVIDERS='{"groq": {"base_url": "api.groq.com/openai/v1"}}',
                      AVAILABLE_PROVIDERS='{"groq": ["m"]}')


def test_addresses_are_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_URL", " http://gpu-box:11434 ")
    assert load_settings().provider_specs()[0].base_url == "http://gpu-box:11434/v1"


def test_the_shipped_languages_are_the_locale_folders() -> None:
    assert shipped_languages() == ["en", "ru"]
    assert shipped_languages(SOURCE_LOCALES) == sorted(p.name for p in SOURCE_LOCALES.iterdir() if p.is_dir())


@pytest.mark.parametrize(("value", "expected"), [("ru", "ru"), ("RU", "ru"), (" en ", "en")])
def test_default_language_is_a_shipped_one(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("DEFAULT_LANGUAGE", value)
    assert load_settings().DEFAULT_LANGUAGE == expected


@pytest.mark.parametrize("value", ["xx", "de", "en_US"])
def test_a_language_without_a_translation_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DEFAULT_LANGUAGE", value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert f"DEFAULT_LANGUAGE: no translation for {value!r}; the bot ships: en, ru" in str(excinfo.value)


def test_malformed_json_names_the_setting_and_the_position_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_EXTRA_PROVIDERS", '{"groq": {"api_key": "gsk-SECRET"')
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "LLM_EXTRA_PROVIDERS: not valid JSON (" in str(excinfo.value)
    assert "SECRET" not in str(excinfo.value)
