"""Seed API: fallback-aware pydantic-ai models for the bot's features.

`LLMModelFactory` is what handlers receive (injected by the plugin's middleware); the
module-level coroutines are the seed's functions, bound to the process's fallback service::

    model = await create_llm_model_with_fallback(context="my_feature")
    model = await create_moderation_model(context="spam_filter")
    model, system_prompt = await create_name_generator_model(language="en", max_length=20)
    stats = await get_provider_status()
"""

from __future__ import annotations

from typing import Any

from pydantic_ai.settings import ModelSettings

from plugins.llm_fallback import LLMFallbackModel, ModelFactory

from .llm_provider_fallback import ProviderType, get_llm_provider_fallback

MODERATION_SETTINGS = ModelSettings(temperature=0.1, max_tokens=500, timeout=30)
NAME_GENERATOR_SETTINGS = ModelSettings(temperature=0.3, max_tokens=60)
"""No timeout of its own: the provider's (`OLLAMA_TIMEOUT`…) applies; the answer never waits for a name."""

_NAME_PROMPTS = {
    "en": (
        "You name conversation threads. Reply with a short, specific title for the user's message: "
        "at most {max_length} characters, no quotes, no trailing punctuation, no emoji. "
        "Reply with the title only."
    ),
    "ru": (
        "Ты придумываешь названия для веток разговора. Ответь коротким и конкретным заголовком для "
        "сообщения пользователя: не длиннее {max_length} символов, без кавычек, без точки в конце, без эмодзи. "
        "Ответь только заголовком, на русском языке."
    ),
}


class LLMModelFactory(ModelFactory):
    """The bot's model presets on top of the plugin's factory."""

    def moderation(self, context: str | None = None) -> LLMFallbackModel:
        """Low temperature, short verdicts (temperature 0.1, max_tokens 500, timeout 30 s)."""
        return self.create(context=context or "moderation", model_settings=MODERATION_SETTINGS)

    def name_generator(
        self, language: str = "en", max_length: int = 20, context: str | None = None
    ) -> tuple[LLMFallbackModel, str]:
        """A model and its system prompt for naming a thread, in `language` (en or ru)."""
        if max_length < 5:
            raise ValueError("max_length must be at least 5")
        prompt = _NAME_PROMPTS.get(language.split("-")[0].lower(), _NAME_PROMPTS["en"])
        model = self.create(context=context or "thread_name", model_settings=NAME_GENERATOR_SETTINGS, background=True)
        return model, prompt.format(max_length=max_length)


def _factory() -> LLMModelFactory:
    return LLMModelFactory(get_llm_provider_fallback())


async def create_llm_model_with_fallback(
    context: str | None = None,
    model_settings: ModelSettings | None = None,
    force_provider: ProviderType | None = None,
) -> LLMFallbackModel:
    """A model that falls back between providers; `force_provider` pins one (no fallback)."""
    return _factory().create(context=context, model_settings=model_settings, force_provider=force_provider)


async def create_moderation_model(context: str | None = None) -> LLMFallbackModel:
    return _factory().moderation(context)


async def create_name_generator_model(
    language: str = "en", max_length: int = 20, context: str | None = None
) -> tuple[LLMFallbackModel, str]:
    return _factory().name_generator(language, max_length, context)


async def get_provider_status() -> dict[str, Any]:
    """The seed's status dict (see `LLMProviderFallback.get_provider_stats`)."""
    return await get_llm_provider_fallback().get_provider_stats()
