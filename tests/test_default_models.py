"""The default models are current: not retired, and not retiring within 30 days (checked against
pydantic-ai's deprecation data as installed, on today's date, so it also warns of the next one),
and the default OpenAI models run the bot's tool-using agent over Chat Completions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_ai import Agent

from luka_bot.core.config import AVAILABLE_PROVIDERS
from plugins.llm_fallback.deprecations import model_status, utc_today
from plugins.llm_fallback.providers import ProviderClient, ProviderSpec, refuses_chat_tools
from tests.fakes.fake_llm import FakeLLM

NOTICE = timedelta(days=30)
DEFAULT_MODELS = [(provider, model) for provider, models in AVAILABLE_PROVIDERS.items() for model in models]


@pytest.mark.parametrize(("provider", "model"), DEFAULT_MODELS)
def test_a_default_model_is_not_retired_nor_retiring_within_30_days(provider: str, model: str) -> None:
    today = utc_today()
    status = model_status(provider, model, today=today)
    due = status.retirement_date
    assert due is None or due > today + NOTICE, (
        f"default {status.describe(today)}: choose a current model from pydantic-ai's tables "
        "(luka_bot/core/config/providers.py)")


@pytest.mark.parametrize(("provider", "model"), DEFAULT_MODELS)
def test_a_default_model_can_run_the_chats_tools(provider: str, model: str) -> None:
    assert not refuses_chat_tools(provider, model)  # type: ignore[arg-type]


class Verdict(BaseModel):
    action: str


@pytest.mark.parametrize("model", AVAILABLE_PROVIDERS["openai"])
async def test_the_default_openai_models_answer_an_agent_with_tools_and_structured_output(model: str) -> None:
    """OpenAI's current models refuse tools over Chat Completions while they reason: pydantic-ai raises
    before sending. The provider turns reasoning off for them, so the request goes out."""
    async with FakeLLM("openai") as fake:
        client = ProviderClient(ProviderSpec("openai", "openai", fake.v1_url, (model,), SecretStr("sk-test")))
        try:
            chat = Agent(client.models[model])

            @chat.tool_plain
            def add(a: int, b: int) -> int:
                return a + b

            assert (await chat.run("hi")).output == "answer from openai"
            assert fake.requests[-1]["model"] == model
            assert fake.requests[-1]["reasoning_effort"] == "none"
            assert [t["function"]["name"] for t in fake.requests[-1]["tools"]] == ["add"]

            fake.reply = '{"action": "allow"}'
            moderation = Agent(client.models[model], output_type=Verdict)
            assert (await moderation.run("hello")).output == Verdict(action="allow")
        finally:
            await client.aclose()


async def test_reasoning_stays_off_through_the_fallback_engine_as_the_bot_builds_it() -> None:
    """The model settings survive the engine's attempts: a tool-using agent on the fallback's
    default model reaches OpenAI (here a fake on 127.0.0.1) with reasoning off."""
    from luka_bot.core.config import load_settings
    from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback
    from plugins.llm_fallback import MemoryStateStore, ModelFactory

    async with FakeLLM("openai") as fake:
        settings = load_settings(_env_file=None, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.v1_url,
                                 OLLAMA_URL="http://127.0.0.1:9")  # the primary is down: the fallback answers
        fallback = create_llm_provider_fallback(settings, MemoryStateStore())
        try:
            agent = Agent(ModelFactory(fallback).create())

            @agent.tool_plain
            def add(a: int, b: int) -> int:
                return a + b

            assert (await agent.run("hi")).output == "answer from openai"
        finally:
            await fallback.aclose()
    request = fake.requests[-1]
    assert (request["model"], request["reasoning_effort"]) == (AVAILABLE_PROVIDERS["openai"][0], "none")
