"""Seed API: the process-wide provider fallback service, bound to the bot's settings.

The mechanism lives in `plugins.llm_fallback`; this module only builds it from
`luka_bot.core.config` once per process.
"""

from __future__ import annotations

from typing import Literal

from luka_bot.core.config import Settings, get_settings
from luka_bot.services.state_stores import build_fallback_store
from plugins.llm_fallback import LLMProviderFallback, StateStore

ProviderType = Literal["ollama", "openai"]

__all__ = ["LLMProviderFallback", "ProviderType", "create_llm_provider_fallback", "get_llm_provider_fallback",
           "set_llm_provider_fallback"]

_fallback: LLMProviderFallback | None = None


def create_llm_provider_fallback(settings: Settings, store: StateStore | None = None) -> LLMProviderFallback:
    """A new fallback service for these settings, on `store` (default: Redis if configured, else memory)."""
    return LLMProviderFallback(
        settings.provider_specs(),
        store if store is not None else build_fallback_store(settings),
        failure_cooldown=settings.LLM_FAILURE_COOLDOWN,
        preferred_ttl=settings.LLM_PREFERRED_TTL,
        max_cooldown=settings.LLM_MAX_COOLDOWN,
        hedge_delay=settings.LLM_HEDGE_DELAY,
        max_concurrent_requests=settings.LLM_MAX_CONCURRENT_REQUESTS or None,
        recovery_probe_interval=settings.LLM_RECOVERY_PROBE_INTERVAL,
        standby_check_interval=settings.LLM_STANDBY_CHECK_INTERVAL,
    )


def get_llm_provider_fallback() -> LLMProviderFallback:
    """The process's fallback service (created on first use from the settings)."""
    global _fallback
    if _fallback is None:
        _fallback = create_llm_provider_fallback(get_settings())
    return _fallback


def set_llm_provider_fallback(fallback: LLMProviderFallback | None) -> None:
    """Install the process's fallback service (the bot's loader does; tests may reset it)."""
    global _fallback
    _fallback = fallback
