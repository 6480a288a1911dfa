"""Thread names from the first message, via the name-generator model (falls back like every call)."""

from __future__ import annotations

from pydantic_ai import Agent

from luka_bot.core.user_limits import CountTokens

from .llm_model_factory import LLMModelFactory, create_name_generator_model

MAX_NAME_LENGTH = 40


def clean_name(raw: str, max_length: int = MAX_NAME_LENGTH) -> str:
    name = " ".join(raw.strip().strip("\"'«»“”").split())
    name = name.rstrip(".!?,;:")
    if len(name) > max_length:
        name = name[: max_length - 1].rstrip() + "…"
    return name


async def generate_thread_name(message: str, language: str = "en", models: LLMModelFactory | None = None,
                               max_length: int = MAX_NAME_LENGTH) -> str:
    """A short title for a thread that starts with `message` (raises if every provider fails)."""
    if models is None:
        model, prompt = await create_name_generator_model(language=language, max_length=max_length)
        agent: Agent[None, str] = Agent(model, instructions=prompt, capabilities=[CountTokens()])
    else:
        def build() -> Agent[None, str]:
            model, prompt = models.name_generator(language=language, max_length=max_length)
            return Agent(model, instructions=prompt, capabilities=[CountTokens()])

        agent = models.reused(("thread_name", language, max_length), build)  # one per language and length
    result = await agent.run(message[:2000])
    return clean_name(result.output, max_length) or message[:max_length]
