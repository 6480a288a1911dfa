"""Per-user limits, in process: the real app (`build_app`) fed updates, providers on `FakeLLM` servers.

A message is judged at the time Telegram gives it (`message.date`), so these tests set that time
from a `FakeClock`; the daily quota reads the same clock. Nothing sleeps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
import pytest
import redis.asyncio as aioredis
from aiogram.types import Update

from luka_bot.core.config import ConfigError, load_settings
from luka_bot.core.user_limits import DailyTokens, UserLimits, find_user_limits
from luka_bot.services.state_stores import state_store
from plugins.llm_fallback import RedisOptions, SharedRedis, connect_redis
from plugins.llm_fallback.budget import Budgets, Period
from tests.conftest import FakeClock
from tests.fakes.redis_server import RedisServer
from tests.test_bot_handlers import ADMIN, USER, Env, llms, make_env, message_update  # noqa: F401

OTHER = 1002
ANSWER = "answer from ollama"
RATE_NOTICE = "⏳ Too many messages: I skipped this one. Write again in {}."
QUOTA_NOTICE = "📊 You have used up today's limit. I'll answer again in {}."
MAKE = Callable[..., Awaitable[Env]]


def at(text: str, when: float, *, user_id: int = USER, lang: str = "en") -> Update:
    """A private text message Telegram dated `when` (epoch seconds)."""
    data = message_update(text, user_id=user_id, lang=lang).model_dump(mode="json", exclude_none=True)
    data["message"]["date"] = int(when)
    return Update.model_validate(data)


def answers(env: Env, chat_id: int = USER) -> int:
    return env.api.texts(chat_id).count(ANSWER)


def notices(env: Env, chat_id: int = USER) -> list[str]:
    return [t for t in env.api.texts(chat_id) if t.startswith(("⏳", "📊", "⏱"))]


def limits_of(env: Env) -> UserLimits:
    limits = find_user_limits(env.app.dp)
    assert limits is not None
    return limits


# --- the rate ---------------------------------------------------------------------------------------------


async def test_a_burst_from_one_user_costs_a_few_llm_calls_one_notice_and_others_are_served(
    make_env: MAKE, clock: FakeClock,
) -> None:
    env = await make_env()  # the defaults: 5 messages per 10 s, 3 at once
    for i in range(100):
        await env.feed(at(f"spam {i}", clock.now))
    assert answers(env) == 3
    assert env.primary.count() == 3 + 1, "three answers and the thread's name"
    assert notices(env) == [RATE_NOTICE.format("2s")]
    await env.feed(at("hello", clock.now, user_id=OTHER))
    assert env.api.texts(OTHER) == [f"🧵 {ANSWER}", ANSWER], "another user is not limited by the first one's burst"


async def test_the_rate_refills_and_a_notice_comes_at_most_once_per_window(make_env: MAKE, clock: FakeClock) -> None:
    env = await make_env()
    start = clock.now
    for _ in range(4):
        await env.feed(at("hi", start))
    assert (answers(env), len(notices(env))) == (3, 1)
    await env.feed(at("hi", start + 1))  # the next token is 2 s away: refused, and no second notice
    assert (answers(env), len(notices(env))) == (3, 1)
    await env.feed(at("hi", start + 2))
    await env.feed(at("hi", start + 2))
    assert (answers(env), len(notices(env))) == (4, 1)
    for _ in range(4):  # the window is over: a full burst again, and a new notice for what is past it
        await env.feed(at("hi", start + 10))
    assert (answers(env), len(notices(env))) == (7, 2)


async def test_the_notice_is_in_the_users_language(make_env: MAKE, clock: FakeClock) -> None:
    env = await make_env()
    for _ in range(4):
        await env.feed(at("привет", clock.now, lang="ru"))
    assert notices(env) == ["⏳ Слишком много сообщений: это я пропустил. Напишите снова через 2 с."]


async def test_admins_are_not_limited(make_env: MAKE, clock: FakeClock) -> None:
    env = await make_env()
    for i in range(10):
        await env.feed(at(f"admin {i}", clock.now, user_id=ADMIN))
    assert answers(env, ADMIN) == 10 and not notices(env, ADMIN)


async def test_commands_and_buttons_still_work_for_a_user_over_the_limit(make_env: MAKE, clock: FakeClock) -> None:
    env = await make_env(USER_RATE_LIMIT=1, USER_RATE_WINDOW=3600, USER_RATE_BURST=1)
    await env.feed(at("first", clock.now))
    await env.feed(at("second", clock.now))
    assert answers(env) == 1 and len(notices(env)) == 1
    for command in ("/help", "/new", "/threads", "/help"):
        await env.feed(at(command, clock.now))
    texts = env.api.texts(USER)
    assert sum(t.startswith("I answer your messages") for t in texts) == 2
    assert any(t.startswith("🧵 New thread started") for t in texts)
    assert any(t.startswith("🧵 Your recent threads") for t in texts)
    await env.press("llmadm:clear:", user_id=USER)  # a button: answered (a refusal: not an admin)
    assert env.api.of("answerCallbackQuery")
    assert answers(env) == 1 and len(notices(env)) == 1, "neither counted nor refused"


async def test_no_limit_when_the_rate_is_zero(make_env: MAKE, clock: FakeClock) -> None:
    env = await make_env(USER_RATE_LIMIT=0)
    for i in range(12):
        await env.feed(at(f"hi {i}", clock.now))
    assert answers(env) == 12 and not notices(env)
    assert find_user_limits(env.app.dp) is None, "no middleware at all"


# --- shared by every replica ------------------------------------------------------------------------------


async def test_two_apps_on_one_redis_share_each_users_rate(make_env: MAKE, clock: FakeClock, redis_url: str) -> None:
    replicas = [await make_env(redis_url=redis_url), await make_env(redis_url=redis_url)]
    for i in range(10):
        await replicas[i % 2].feed(at(f"spam {i}", clock.now))
    assert answers(replicas[0]) == 3, "3 at once for the whole bot, not 3 per replica"  # one Bot API mock for both
    assert len(notices(replicas[0])) == 1
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted(await client.keys("luka:42:limits:*"))
    finally:
        await client.aclose()
    assert keys == [f"luka:42:limits:notice:{USER}", f"luka:42:limits:rate:{USER}"], "under the bot's prefix"


async def test_without_redis_the_limit_holds_per_process_and_the_bot_keeps_answering(
    make_env: MAKE, clock: FakeClock, own_redis: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    env = await make_env(redis_url=own_redis.url)
    own_redis.kill()
    with caplog.at_level(logging.INFO):
        for i in range(10):
            await env.feed(at(f"spam {i}", clock.now))
        await env.feed(at("hello", clock.now, user_id=OTHER))
    assert answers(env) == 3 and len(notices(env)) == 1
    assert answers(env, OTHER) == 1
    assert "Traceback" not in caplog.text
    assert sum("Redis state store unavailable" in r.getMessage() for r in caplog.records) == 1


# --- the daily quota --------------------------------------------------------------------------------------


def moscow(text: str) -> float:
    return datetime.fromisoformat(text + "+03:00").timestamp()


def reported_tokens(env: Env) -> int:
    """What the fake provider reported as used (its rough count: words of the prompt and of the reply)."""
    total = 0
    for body in env.primary.requests:
        total += len(json.dumps(body["messages"]).split()) + len(env.primary.reply.split())
    return total


async def test_the_daily_quota_counts_what_providers_report_and_rolls_over_at_midnight_in_its_zone(
    make_env: MAKE, clock: FakeClock,
) -> None:
    env = await make_env(USER_DAILY_TOKENS=1000, LLM_BUDGET_TIMEZONE="Europe/Moscow")
    limits = limits_of(env)
    assert limits.quota is not None
    limits.quota.clock = clock
    clock.now = moscow("2026-12-01T23:50:00")  # 20:50 UTC: the UTC day does not end at the same time
    await env.feed(at("hello", clock.now))
    assert answers(env) == 1
    spent = await limits.quota.spent(USER)
    assert spent == reported_tokens(env) > 0, "the reply's and the thread name's tokens, as reported"

    limits.quota.limit = spent  # reached
    calls = env.primary.count()
    await env.feed(at("more", clock.now))
    assert env.primary.count() == calls, "past the quota a message costs no LLM call"
    assert notices(env) == [QUOTA_NOTICE.format("10m 0s")]
    await env.feed(at("still more", clock.now + 5))
    assert len(notices(env)) == 1, "one notice per window"

    clock.now = moscow("2026-12-02T00:00:01")
    await env.feed(at("a new day", clock.now))
    assert answers(env) == 2
    assert await limits.quota.spent(ADMIN) == 0


async def test_admins_spend_no_quota(make_env: MAKE, clock: FakeClock) -> None:
    env = await make_env(USER_DAILY_TOKENS=1)
    for i in range(3):
        await env.feed(at(f"admin {i}", clock.now + 5 * i, user_id=ADMIN))
    assert answers(env, ADMIN) == 3
    quota = limits_of(env).quota
    assert quota is not None and await quota.spent(ADMIN) == 0


async def test_quota_counts_made_while_redis_is_away_reach_redis_when_it_returns(
    own_redis: RedisServer, clock: FakeClock,
) -> None:
    monotonic = FakeClock(0)
    replicas = []
    for _ in range(2):
        client = connect_redis(RedisOptions(url=own_redis.url, socket_timeout=0.2))
        shared = SharedRedis(client, retry_interval=5, monotonic=monotonic)
        store = state_store(shared, "luka:42:limits:", clock)
        replicas.append((DailyTokens(1000, store, Budgets(period=Period.DAY), clock=clock), shared))
    (first, first_redis), (second, _) = replicas
    try:
        await first.add(USER, 100)
        await second.add(USER, 10)
        assert await first.spent(USER) == await second.spent(USER) == 110

        own_redis.kill()
        await first.add(USER, 50)  # Redis does not answer: counted here, one ERROR line
        assert first_redis.kind == "degraded"
        assert await first.spent(USER) == 50, "while Redis is away: what this process counted since"
        own_redis.restart()  # empty: what it held is lost with it

        monotonic.advance(5)  # the next call tries Redis again and adds what was counted meanwhile first
        assert await first.spent(USER) == 50
        assert first_redis.kind == "redis"
        assert await second.spent(USER) == 50, "the other replica sees it"
    finally:
        for quota, _ in replicas:
            await quota.close()


# --- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("USER_RATE_LIMIT", -1), ("USER_RATE_WINDOW", 0),
                                             ("USER_RATE_BURST", 0), ("USER_DAILY_TOKENS", -5)])
def test_a_bad_limit_setting_stops_start_up_naming_it(name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None, **{name: value})


def test_the_start_up_line_says_what_is_limited_and_who_shares_it() -> None:
    settings = load_settings(_env_file=None, USER_DAILY_TOKENS=50_000, LLM_BUDGET_TIMEZONE="Europe/Moscow")
    limits = UserLimits.from_settings(settings)
    assert limits.describe() == ("5 messages per 10s (3 at once), this process only (set REDIS_URL to share it); "
                                 "50000 tokens per user per day (from 00:00 Europe/Moscow)")
    assert not UserLimits.from_settings(load_settings(_env_file=None, USER_RATE_LIMIT=0)).active
