"""`/llm_status` shows a grown cooldown and hedging (en, ru); the status keeps the seed's dict keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from luka_bot.core.i18n import build_i18n
from plugins.llm_fallback.admin import render_status

from .conftest import Env, http_error, refused


async def _grown_cooldown(make_env: Callable[..., Env]) -> Env:
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    env.clock.advance(300)
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"  # the probe fails: the cooldown doubles
    assert (await env.health("ollama"))["cooldown_multiplier"] == 2
    return env


async def _render(env: Env, locale: str, **ollama: object) -> str:
    status = await env.engine.status()
    status = replace(status, providers=[replace(p, **ollama) if p.name == "ollama" else p for p in status.providers])
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
        return render_status(status).as_kwargs()["text"]


async def test_grown_cooldown_and_hedges_in_english(make_env: Callable[..., Env]) -> None:
    text = await _render(await _grown_cooldown(make_env), "en", hedges_last_hour=3)
    assert "1. ollama — 🔴 cooling down, 10m 0s left (failures: 2) — cooldown grown ×2 after failed probes" in text
    assert "slow first reply: hedged to the next provider 3 times in the last hour" in text


async def test_grown_cooldown_and_hedges_in_russian(make_env: Callable[..., Env]) -> None:
    text = await _render(await _grown_cooldown(make_env), "ru", hedges_last_hour=3)
    assert "1. ollama — 🔴 на паузе, осталось 10 мин 0 с (сбоев: 2) — пауза увеличена ×2 после неудачных проверок" in text
    assert "дублировался следующему провайдеру 3 раз" in text
    assert "grown" not in text and "hedged" not in text


SEED_KEYS = {"primary_provider", "fallback_provider", "provider_order", "preferred_provider", "forced_provider",
             "provider_health"}
SEED_HEALTH_KEYS = {"healthy", "configured", "available", "state", "cooldown_seconds_left", "failures", "last_error",
                    "models"}


async def test_the_typed_status_keeps_the_seeds_dict_for_python_callers(make_env: Callable[..., Env]) -> None:
    env = await _grown_cooldown(make_env)
    stats = await env.stats()
    assert SEED_KEYS <= stats.keys()
    assert SEED_HEALTH_KEYS <= stats["provider_health"]["ollama"].keys()
    ollama = stats["provider_health"]["ollama"]
    assert (ollama["healthy"], ollama["available"], ollama["state"]) == (False, False, "cooling")
    assert stats["provider_health"]["openai"]["healthy"] is True
    assert stats["provider_order"] == ["ollama", "openai"] and stats["preferred_provider"] == "openai"
    text = await _render(env, "en")
    assert text.startswith("🤖 LLM providers") and "2. openai — 🟢 healthy" in text
