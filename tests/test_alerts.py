"""Admin alerts: one per state transition across processes, the right last word, honest texts.

The engine runs over scripted providers with a fake clock (conftest `make_env`); alerts go out
through a real `Bot` to the fake Bot API on 127.0.0.1, so a test counts the messages admins get.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from luka_bot.core.i18n import build_i18n
from plugins.llm_fallback import HealthEvent, RedisStateStore
from plugins.llm_fallback.alerts import AdminAlerts
from tests.fakes.fake_telegram import FakeTelegram

from .conftest import Env, http_error

ADMINS = (7001, 7002)
DOWN = "🔴 LLM provider ollama is down"
BACK = "🟢 LLM provider ollama is back and serving again."


@pytest_asyncio.fixture
async def telegram() -> AsyncIterator[tuple[FakeTelegram, Bot]]:
    async with FakeTelegram(strict_chats=False) as fake:
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
        yield fake, bot
        await bot.session.close()


def texts(fake: FakeTelegram, admin: int = ADMINS[0]) -> list[str]:
    return [c.params["text"] for c in fake.calls_of("sendMessage") if c.params["chat_id"] == admin]


def alerted_env(make_env: Callable[..., Env], bot: Bot, admins: tuple[int, ...] = ADMINS[:1]) -> tuple[Env, AdminAlerts]:
    """An engine whose health events are announced to `admins` through `bot`."""
    env = make_env()
    alerts = AdminAlerts(bot, env.engine, admins)
    env.engine.add_listener(alerts)
    return env, alerts


async def settled(*alerts: AdminAlerts) -> None:
    for alert in alerts:
        await alert.drain()


async def test_down_recovered_down_within_one_window_ends_on_down(
    make_env: Callable[..., Env], telegram: tuple[FakeTelegram, Bot],
) -> None:
    fake, bot = telegram
    env, alerts = alerted_env(make_env, bot, ADMINS)

    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    await settled(alerts)
    env.clock.advance(20)
    env.fakes.ok("ollama")
    await env.engine.report_provider_success("ollama")  # e.g. "check now" proved it works: recovered
    assert await env.ask() == "ollama/m1"
    await settled(alerts)
    env.clock.advance(20)
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"  # down again, well within the first alert's window
    await settled(alerts)

    for admin in ADMINS:
        sent = texts(fake, admin)
        assert [t[:len(DOWN)] if t.startswith(DOWN) else t for t in sent] == [DOWN, BACK, DOWN], sent
    assert (await env.health("ollama"))["state"] == "cooling", "the last alert matches the state"


async def test_one_alert_per_transition_across_processes_sharing_redis(
    make_env: Callable[..., Env], telegram: tuple[FakeTelegram, Bot], redis_url: str,
) -> None:
    fake, bot = telegram
    stores = [RedisStateStore.from_url(redis_url) for _ in range(5)]
    processes = [AdminAlerts(bot, make_env(store=store).engine, ADMINS[:1]) for store in stores]
    try:
        for kind in ("down", "recovered", "down", "down", "recovered"):
            event = HealthEvent(kind, "ollama", error="HTTP 500", cooldown=300)  # type: ignore[arg-type]
            for alerts in processes:  # every process sees the same change at once
                alerts(event)
            await settled(*processes)
    finally:
        for store in stores:
            await store.close()

    sent = texts(fake)
    assert [DOWN if t.startswith(DOWN) else t for t in sent] == [DOWN, BACK, DOWN, BACK], sent


async def test_down_without_a_working_fallback_does_not_promise_one(
    make_env: Callable[..., Env], telegram: tuple[FakeTelegram, Bot],
) -> None:
    fake, bot = telegram
    env, alerts = alerted_env(make_env, bot)

    env.fakes.fail("openai", lambda: http_error(500, "g1"))
    await env.engine.report_provider_failure("openai", ConnectionError("refused"))  # the fallback cools down first
    await settled(alerts)
    await env.engine.report_provider_failure("ollama", ConnectionError("refused"))
    await settled(alerts)

    openai_down, ollama_down = texts(fake)
    assert "the fallback answers meanwhile" in openai_down, "ollama is healthy: it answers"
    assert "the fallback answers meanwhile" not in ollama_down
    assert "no other provider can answer meanwhile" in ollama_down


async def test_a_cleared_state_announces_the_next_outage(
    make_env: Callable[..., Env], telegram: tuple[FakeTelegram, Bot],
) -> None:
    """`/llm_clear` forgets what admins were told: the next outage is announced, not swallowed."""
    fake, bot = telegram
    env, alerts = alerted_env(make_env, bot)
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))

    await env.ask()
    await settled(alerts)
    await env.engine.clear_cache()  # what /llm_clear does
    await env.ask()
    await settled(alerts)

    assert [t.startswith(DOWN) for t in texts(fake)] == [True, True]


async def test_alerts_are_sent_in_the_order_the_events_happened(
    make_env: Callable[..., Env], telegram: tuple[FakeTelegram, Bot],
) -> None:
    fake, bot = telegram
    env = make_env()
    alerts = AdminAlerts(bot, env.engine, ADMINS[:1])
    events: list[Any] = [HealthEvent("down", "ollama", error="e", cooldown=300), HealthEvent("recovered", "ollama")]
    for event in events * 3:  # fired back to back, without waiting
        alerts(event)
    await settled(alerts)
    assert [BACK if t == BACK else t[:len(DOWN)] for t in texts(fake)] == [DOWN, BACK] * 3


def test_down_without_a_fallback_in_russian(make_env: Callable[..., Env]) -> None:
    alerts = AdminAlerts(bot=None, fallback=make_env().engine, admin_ids=[1], locale="ru")  # type: ignore[arg-type]
    with build_i18n().context():
        text = alerts._text(HealthEvent("down", "ollama", error="HTTP 500", cooldown=300), fallback_available=False)
    assert text.startswith("🔴 LLM-провайдер ollama недоступен: HTTP 500.")
    assert "других доступных провайдеров нет" in text and "5 мин 0 с" in text
