"""The operator-facing status and alert texts, in English and Russian."""

from __future__ import annotations

from luka_bot.core.i18n import build_i18n
from plugins.llm_fallback.admin import render_status
from plugins.llm_fallback.alerts import AdminAlerts
from plugins.llm_fallback.events import HealthEvent

from .conftest import http_error


async def _status_after_outage(make_env, locale: str) -> str:
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    await env.engine.force_provider("openai", 600)
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
        return render_status(await env.engine.status()).as_kwargs()["text"]


async def test_status_in_english(make_env):
    text = await _status_after_outage(make_env, "en")
    assert "1. ollama — 🔴 cooling down, 5m 0s left (failures: 1)" in text
    assert "2. openai — 🟢 healthy" in text
    assert "Preferred (cached): openai" in text
    assert "Forced: openai, 10m 0s left" in text
    assert "State store: memory (this process)" in text


async def test_status_in_russian_translates_states_and_durations(make_env):
    text = await _status_after_outage(make_env, "ru")
    assert "1. ollama — 🔴 на паузе, осталось 5 мин 0 с (сбоев: 1)" in text
    assert "Принудительно: openai, осталось 10 мин 0 с" in text
    assert "cooling" not in text and "left" not in text


async def test_alert_in_the_configured_locale(make_env):
    env = make_env()
    i18n = build_i18n()
    alerts = AdminAlerts(bot=None, fallback=env.engine, admin_ids=[1], locale="ru")  # type: ignore[arg-type]
    with i18n.context():
        text = alerts._text(HealthEvent("down", "ollama", error="HTTP 500", cooldown=300))
    assert text.startswith("🔴 LLM-провайдер ollama недоступен: HTTP 500.")
    assert "5 мин 0 с" in text


async def test_an_error_ending_with_a_period_reads_as_one_sentence(make_env):
    env = make_env()
    alerts = AdminAlerts(bot=None, fallback=env.engine, admin_ids=[1])  # type: ignore[arg-type]
    text = alerts._text(HealthEvent("down", "ollama", error="Request timeout.", cooldown=300))
    assert "Request timeout. It is skipped for 5m 0s" in text and ".." not in text


async def test_a_broken_standby_alert_names_the_cause_the_setting_and_the_risk(make_env):
    env = make_env()
    alerts = AdminAlerts(bot=None, fallback=env.engine, admin_ids=[1])  # type: ignore[arg-type]
    text = alerts._text(HealthEvent("standby_failed", "openai", error="HTTP 401: invalid key", setting="OPENAI_API_KEY",
                                    serving="ollama"))
    assert text == ("⚠️ openai can't answer: HTTP 401: invalid key (OPENAI_API_KEY). If ollama fails now, "
                    "users get apologies.")


async def test_a_provider_that_cannot_be_reached_is_named_by_its_address_and_setting(make_env, caplog):
    from .conftest import refused

    env = make_env()
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"
    error = (await env.health("ollama"))["last_error"]
    assert error == "Connection refused (127.0.0.1:9, OLLAMA_URL)", error
