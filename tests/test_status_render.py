"""`/llm_status` shows a grown cooldown and hedging (en, ru), and survives fields it does not know."""

from __future__ import annotations

from collections.abc import Callable

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


async def _render(env: Env, locale: str, **extra_health: object) -> str:
    stats = await env.stats()
    stats["provider_health"]["ollama"].update(extra_health)
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
        return render_status(stats).as_kwargs()["text"]


async def test_grown_cooldown_and_hedges_in_english(make_env: Callable[..., Env]) -> None:
    text = await _render(await _grown_cooldown(make_env), "en", hedges_last_hour=3)
    assert "1. ollama — 🔴 cooling down, 10m 0s left (failures: 2) — cooldown grown ×2 after failed probes" in text
    assert "slow first reply: hedged to the next provider 3 times in the last hour" in text


async def test_grown_cooldown_and_hedges_in_russian(make_env: Callable[..., Env]) -> None:
    text = await _render(await _grown_cooldown(make_env), "ru", hedges_last_hour=3)
    assert "1. ollama — 🔴 на паузе, осталось 10 мин 0 с (сбоев: 2) — пауза увеличена ×2 после неудачных проверок" in text
    assert "дублировался следующему провайдеру 3 раз" in text
    assert "grown" not in text and "hedged" not in text


async def test_fields_the_status_does_not_know_are_ignored(make_env: Callable[..., Env]) -> None:
    env = make_env()
    text = await _render(env, "en", some_future_counter=7, another={"nested": True})
    assert text.startswith("🤖 LLM providers") and "1. ollama — 🟢 healthy" in text
    assert "some_future_counter" not in text
