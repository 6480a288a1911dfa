"""The seed API, used the way the seed document shows it ("Usage", "API Reference").

Settings point the two providers at fake OpenAI-compatible servers on 127.0.0.1
(`tests/fakes/fake_llm.py`): `OLLAMA_URL` at the first, `OPENAI_BASE_URL` at the second.
The process-wide fallback service is installed with `set_llm_provider_fallback()` and reset to
None after each test.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.settings import ModelSettings

from luka_bot.core import config as config_module
from luka_bot.core.config import Settings, load_settings
from luka_bot.services import llm_provider_fallback as fallback_module
from luka_bot.services.agent_factory import create_static_agent_with_basic_tools
from luka_bot.services.llm_model_factory import (
    create_llm_model_with_fallback,
    create_moderation_model,
    create_name_generator_model,
    get_provider_status,
)
from luka_bot.services.llm_provider_fallback import (
    LLMProviderFallback,
    create_llm_provider_fallback,
    get_llm_provider_fallback,
    set_llm_provider_fallback,
)
from luka_bot.services.moderation_service import ModerationVerdict, evaluate_message_moderation
from luka_bot.services.thread_names import generate_thread_name
from plugins.llm_fallback import AllProvidersFailedError
from tests.fakes.fake_llm import FakeLLM

OPENAI_KEY = "sk-test-SECRET-seed-0123456789"

ENV_SETTINGS = (
    "BOT_TOKEN", "ADMIN_IDS", "REDIS_URL", "OLLAMA_URL", "OLLAMA_MODEL_NAME", "OLLAMA_TIMEOUT", "OPENAI_API_KEY",
    "OPENAI_MODEL_NAME", "OPENAI_TIMEOUT", "OPENAI_BASE_URL", "AVAILABLE_PROVIDERS", "LLM_EXTRA_PROVIDERS",
    "LLM_CONNECT_TIMEOUT", "LLM_PREFERRED_TTL", "LLM_FAILURE_COOLDOWN",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No stray `.env` or environment variable decides these tests."""
    monkeypatch.chdir(tmp_path)
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    ollama, openai = FakeLLM("ollama"), FakeLLM("openai")
    await ollama.start()
    await openai.start()
    try:
        yield ollama, openai
    finally:
        await ollama.stop()
        await openai.stop()


@pytest.fixture
async def install(servers: tuple[FakeLLM, FakeLLM]) -> AsyncIterator[Callable[..., LLMProviderFallback]]:
    """Install a process-wide fallback built from settings that point at the fakes."""
    made: list[LLMProviderFallback] = []

    def build(**overrides: Any) -> LLMProviderFallback:
        ollama, openai = servers
        values: dict[str, Any] = {
            "OLLAMA_URL": ollama.url,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": openai.v1_url,
            "OLLAMA_TIMEOUT": 5.0,
            "OPENAI_TIMEOUT": 5.0,
            "LLM_CONNECT_TIMEOUT": 0.5,
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        fallback = create_llm_provider_fallback(load_settings(**values))
        made.append(fallback)
        set_llm_provider_fallback(fallback)
        return fallback

    yield build
    set_llm_provider_fallback(None)
    for fallback in made:
        await fallback.aclose()


@pytest.fixture
def fallback(install: Callable[..., LLMProviderFallback]) -> LLMProviderFallback:
    return install()


async def run_stream(agent: Agent[None, str], prompt: str = "hi") -> str:
    async with agent.run_stream(prompt) as result:
        return "".join([chunk async for chunk in result.stream_text(delta=True)])


# --- create_llm_model_with_fallback -----------------------------------------------------------------


async def test_basic_usage_run_and_run_stream(fallback, servers) -> None:
    ollama, openai = servers
    model = await create_llm_model_with_fallback(context="my_feature")
    agent = Agent(model)

    assert (await agent.run("hello")).output == "answer from ollama"
    assert await run_stream(agent) == "answer from ollama"
    assert ollama.count() == 2
    assert openai.count() == 0
    # the first model of AVAILABLE_PROVIDERS["ollama"] is asked
    assert ollama.requests[-1]["model"] == "gpt-oss"


async def test_basic_usage_fails_over_to_openai(fallback, servers) -> None:
    ollama, openai = servers
    await ollama.stop()
    agent = Agent(await create_llm_model_with_fallback(context="my_feature"))

    assert (await agent.run("hello")).output == "answer from openai"
    assert openai.requests[-1]["model"] == "gpt-6.1-terra"
    status = await get_provider_status()
    assert status["preferred_provider"] == "openai"
    assert status["provider_health"]["ollama"]["healthy"] is False
    assert status["provider_health"]["ollama"]["available"] is False


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_stream"])
async def test_custom_model_settings_reach_the_request(fallback, servers, streamed) -> None:
    ollama, _ = servers
    custom_settings = ModelSettings(temperature=0.5, max_tokens=1000, timeout=30.0)
    model = await create_llm_model_with_fallback(context="my_feature", model_settings=custom_settings)
    agent = Agent(model)

    answer = await run_stream(agent) if streamed else (await agent.run("hi")).output
    assert answer == "answer from ollama"
    body = ollama.requests[-1]
    assert body["temperature"] == 0.5
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 1000


async def test_force_provider_argument_pins_openai_without_fallback(fallback, servers) -> None:
    ollama, openai = servers
    agent = Agent(await create_llm_model_with_fallback(force_provider="openai"))

    assert (await agent.run("hi")).output == "answer from openai"
    assert ollama.count() == 0

    openai.mode = "http500"
    with pytest.raises(AllProvidersFailedError):
        await agent.run("hi")
    assert ollama.count() == 0  # a strict pin: no fallback to the healthy ollama
    assert openai.count() == 2


# --- specialised models -------------------------------------------------------------------------------


async def test_moderation_model_settings(fallback, servers) -> None:
    ollama, _ = servers
    model = await create_moderation_model(context="spam_filter")
    assert (await Agent(model).run("buy cheap pills")).output == "answer from ollama"
    body = ollama.requests[-1]
    assert body["temperature"] == 0.1
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 500


async def test_evaluate_message_moderation_parses_structured_verdict(fallback, servers) -> None:
    ollama, _ = servers
    ollama.reply = '{"action": "delete", "reason": "spam"}'

    verdict = await evaluate_message_moderation("BUY CHEAP PILLS http://spam.example")
    assert isinstance(verdict, ModerationVerdict)
    assert verdict.action == "delete"
    assert verdict.reason == "spam"
    assert ollama.requests[-1]["temperature"] == 0.1


async def test_evaluate_message_moderation_fails_open(fallback, servers, caplog) -> None:
    ollama, openai = servers
    await ollama.stop()
    await openai.stop()
    caplog.set_level(logging.WARNING)

    verdict = await evaluate_message_moderation("hello everyone")
    assert verdict.action == "allow"
    assert OPENAI_KEY not in caplog.text


async def test_name_generator_model_in_russian(fallback) -> None:
    model, system_prompt = await create_name_generator_model(language="ru", max_length=20)
    assert "20" in system_prompt
    assert any("а" <= ch <= "я" for ch in system_prompt.lower())  # Cyrillic text
    assert "русском" in system_prompt
    english_model, english_prompt = await create_name_generator_model(language="en", max_length=20)
    assert "20" in english_prompt and english_prompt != system_prompt
    assert type(model) is type(english_model)


async def test_generate_thread_name_returns_cleaned_reply(fallback, servers) -> None:
    ollama, _ = servers
    ollama.reply = '  "Holiday plans in Rome."  '

    name = await generate_thread_name("Let's plan our holiday in Rome next spring", language="en")
    assert name == "Holiday plans in Rome"
    # Our prompt is a system message; pydantic-ai (2.78+) may put its own framing message first.
    system = [m["content"] for m in ollama.requests[-1]["messages"] if m["role"] == "system"]
    ours = [content for content in system if "You name conversation threads" in content]
    assert ours and "at most 40 characters" in ours[0]


async def test_agent_factory_uses_the_fallback(fallback, servers) -> None:
    ollama, openai = servers
    await ollama.stop()
    agent = await create_static_agent_with_basic_tools(user_id=42)
    assert (await agent.run("hi")).output == "answer from openai"
    tools = {t["function"]["name"] for t in openai.requests[-1].get("tools", [])}
    assert {"current_datetime", "calculate"} <= tools


# --- monitoring and management ----------------------------------------------------------------------------


async def test_get_provider_status_shape(fallback, servers) -> None:
    await Agent(await create_llm_model_with_fallback(context="my_feature")).run("hi")
    stats = await get_provider_status()

    assert stats["primary_provider"] == "ollama"
    assert stats["fallback_provider"] == "openai"
    assert stats["preferred_provider"] == "ollama"
    assert stats["store"] == "memory"
    for provider in ("ollama", "openai"):
        health = stats["provider_health"][provider]
        assert health["healthy"] is True
        assert health["configured"] is True
        assert health["available"] is True
    assert OPENAI_KEY not in repr(stats)


async def test_get_llm_provider_fallback_returns_the_installed_service(fallback) -> None:
    assert get_llm_provider_fallback() is fallback
    assert get_llm_provider_fallback() is get_llm_provider_fallback()


async def test_get_llm_provider_fallback_is_created_once_from_settings(monkeypatch, servers) -> None:
    ollama, openai = servers
    settings: Settings = load_settings(OLLAMA_URL=ollama.url, OPENAI_API_KEY=OPENAI_KEY,
                                       OPENAI_BASE_URL=openai.v1_url)
    monkeypatch.setattr(config_module, "_settings", settings)
    monkeypatch.setattr(fallback_module, "_fallback", None)

    first = get_llm_provider_fallback()
    try:
        assert get_llm_provider_fallback() is first
        assert isinstance(first, LLMProviderFallback)
        assert first.specs["ollama"].base_url == ollama.v1_url
        assert (await Agent(await create_llm_model_with_fallback()).run("hi")).output == "answer from ollama"
    finally:
        await first.aclose()


async def test_force_provider_then_clear_cache(fallback, servers) -> None:
    ollama, openai = servers
    agent = Agent(await create_llm_model_with_fallback(context="my_feature"))

    service = get_llm_provider_fallback()
    await service.force_provider("openai", duration_seconds=600)
    stats = await get_provider_status()
    assert stats["forced_provider"] == "openai"
    assert 590 <= stats["forced_seconds_left"] <= 600
    assert (await agent.run("hi")).output == "answer from openai"
    assert ollama.count() == 0

    # Forced, not pinned: openai failing still falls back to ollama.
    openai.mode = "http500"
    assert (await agent.run("hi")).output == "answer from ollama"
    openai.mode = "ok"

    await service.clear_cache()
    stats = await get_provider_status()
    assert stats["forced_provider"] is None
    assert stats["provider_health"]["openai"]["healthy"] is True
    assert (await agent.run("hi")).output == "answer from ollama"
    assert (await get_provider_status())["preferred_provider"] == "ollama"


async def test_manual_health_reporting(fallback, servers) -> None:
    ollama, openai = servers
    service = get_llm_provider_fallback()
    agent = Agent(await create_llm_model_with_fallback())

    await service.report_provider_failure(provider="ollama", error=Exception("Connection timeout"),
                                          context="manual_test")
    assert (await get_provider_status())["provider_health"]["ollama"]["available"] is False
    assert (await agent.run("hi")).output == "answer from openai"
    assert ollama.count() == 0

    await service.report_provider_success(provider="ollama", context="manual_test")
    assert (await get_provider_status())["provider_health"]["ollama"]["healthy"] is True
    assert (await agent.run("hi")).output == "answer from ollama"


async def test_openai_without_api_key_is_not_configured_and_never_tried(install, servers) -> None:
    ollama, openai = servers
    install(OPENAI_API_KEY=None)

    stats = await get_provider_status()
    assert stats["provider_health"]["openai"]["configured"] is False
    assert stats["provider_health"]["openai"]["available"] is False
    assert stats["provider_health"]["ollama"]["configured"] is True

    agent = Agent(await create_llm_model_with_fallback(context="my_feature"))
    assert (await agent.run("hi")).output == "answer from ollama"
    await ollama.stop()
    with pytest.raises(AllProvidersFailedError):
        await agent.run("hi")
    assert openai.count() == 0
    stats = await get_provider_status()
    assert stats["provider_health"]["openai"]["configured"] is False
    assert stats["provider_health"]["ollama"]["available"] is False
