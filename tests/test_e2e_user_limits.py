"""End to end: one user's burst cannot drain the paid fallback, and costs the other users nothing.

The real bot (`python -m luka_bot`, long polling FakeTelegram) with the per-user limits at their
defaults, the free primary down (HTTP 500) and the paid fallback (FakeLLM "openai") answering;
a real redis-server. One user sends 100 messages at once, then five other users write. The
bot's `/metrics` say when every update has been handled: nothing here waits for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from luka_bot.core.config import Settings
from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, scrape_metrics, stop_all, texts
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

TOKEN = "123456:LIMITS-token-not-real-XYZ"
ADMIN = 8001
SPAMMER = 8101
OTHERS = list(range(8201, 8206))
BURST = 100
WAIT = 30.0
DEFAULT_BURST = Settings.model_fields["USER_RATE_BURST"].default
NOTICE = "⏳ Too many messages: I skipped this one. Write again in 2s."


@dataclass
class World:
    fake: FakeTelegram
    primary: FakeLLM
    fallback: FakeLLM
    bot: BotProcess
    metrics_url: str
    http: aiohttp.ClientSession

    async def metrics(self) -> dict[str, float]:
        return await scrape_metrics(self.metrics_url, self.http)

    async def handled(self) -> float:
        return (await self.metrics()).get("bot_update_seconds_count{}", 0)

    async def wait_handled(self, count: float, *, paid_for: str, at_most: int) -> None:
        """Until `count` updates are handled, failing as soon as `paid_for`'s paid completions pass `at_most`."""
        for _ in range(int(WAIT / 0.05)):
            paid = len(self.paid_requests(paid_for))
            assert paid <= at_most, f"{paid} paid completions for one user's burst (and counting)"
            if await self.handled() >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} updates not handled\n{self.bot.report()}")

    def paid_requests(self, marker: str) -> list[dict[str, Any]]:
        """The fallback's chat completions whose messages mention `marker` (answers and thread names)."""
        return [r for r in self.fallback.requests if marker in json.dumps(r["messages"], ensure_ascii=False)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    empty_redis(redis_server)
    workdir = tmp_path_factory.mktemp("e2e_user_limits")
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")  # the outage alert goes there
    primary = await FakeLLM("ollama").start()
    primary.set_mode("http500")  # the free primary is down: every answer is paid for
    fallback = await FakeLLM("openai", latency=0.05).start()
    port = free_port()
    env = bot_env(fake, primary, fallback, redis_url=redis_server.url, admin=ADMIN, openai_key="sk-test-limits",
                  METRICS_PORT=port, METRICS_HOST="127.0.0.1", LOG_LEVEL="INFO",
                  USER_RATE_LIMIT=Settings.model_fields["USER_RATE_LIMIT"].default)  # the defaults
    http = aiohttp.ClientSession()
    world = World(fake, primary, fallback, await BotProcess.start(env, workdir), f"http://127.0.0.1:{port}/metrics",
                  http)
    try:
        await world.bot.wait_polling(fake, timeout=60)
        yield world
    finally:
        await world.bot.stop()
        await http.close()
        await stop_all(primary, fallback, fake)
    log = world.bot.log()
    assert "Traceback" not in log
    assert "👥 Per-user limits: 5 messages per 10s (3 at once), shared by every replica (Redis)" in log


async def test_one_users_burst_costs_a_few_paid_calls_one_notice_and_others_are_served_at_once(world: World) -> None:
    fake = world.fake
    before = await world.handled()
    mark = fake.mark()
    for i in range(BURST):
        fake.send_message(f"spam {i}", user_id=SPAMMER)
    for user in OTHERS:
        fake.send_message(f"hello from {user}", user_id=user)
    for user in OTHERS:
        await says(fake, user, "answer from openai", after=mark, timeout=WAIT, log=world.bot.report)

    # the others were not queued behind the burst: their calls are among the first the provider got
    order = [i for i, r in enumerate(world.fallback.requests)
             if any(f"hello from {u}" in json.dumps(r["messages"]) for u in OTHERS)]
    assert len(order) == 2 * len(OTHERS) and max(order) < 2 * (DEFAULT_BURST + 1) + 2 * len(OTHERS), order

    await world.wait_handled(before + BURST + len(OTHERS), paid_for="spam ", at_most=2 * (DEFAULT_BURST + 1))
    sent = texts(fake, SPAMMER, after=mark)
    answers = sent.count("answer from openai")
    # Telegram dates messages to the second: a burst across a 2-second boundary finds one more token
    assert DEFAULT_BURST <= answers <= DEFAULT_BURST + 1, sent
    assert [t for t in sent if t.startswith("⏳")] == [NOTICE]
    paid = world.paid_requests("spam ")
    assert len(paid) <= 2 * answers, "each answer, and at most a thread name per answer"
    scraped = await world.metrics()
    assert scraped["bot_throttled_total{'reason': 'rate'}"] == BURST - answers
    print(f"\n{BURST} messages from one user, primary down: {len(paid)} paid completions "
          f"({answers} answers, {len(paid) - answers} thread names), 1 notice")


async def test_a_user_over_the_limit_can_still_use_commands(world: World) -> None:
    mark = world.fake.mark()
    world.fake.send_message("/help", user_id=SPAMMER)
    await says(world.fake, SPAMMER, lambda t: t.startswith("I answer your messages"), after=mark, timeout=WAIT,
               log=world.bot.report)
