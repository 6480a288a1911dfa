"""Fault matrix at bot level: every provider fault × {primary, fallback, both}, through the real bot process.

One `python -m luka_bot` serves the whole module (long polling against FakeTelegram), with a real
redis-server and two FakeLLM servers on 127.0.0.1: "ollama" (primary) and "openai" (fallback).
Each case puts the fault on the primary, the fallback or both, sends one private message and checks
what the user and the admin see:

- one provider works: the user gets that provider's answer, no apology, and no admin alert calls the
  working provider down;
- none works: the user gets the apology within `APOLOGY_BOUND` (two provider timeouts + 2 s: each
  provider is tried once, a hang ends at the provider timeout) and the admin gets exactly one
  "❌ All LLM providers failed!" alert (and at most one "down" alert per provider);
- the bot's log has no traceback.

Between cases the fallback state (cooldowns, preferred provider, alert dedupe keys: everything under
the bot's `REDIS_PREFIX`) is deleted, so every case starts from "both healthy"; the user's
conversation (another prefix) is kept, so no thread-name request runs besides the chat request.
Short timeouts (1 s read, 0.5 s connect) keep the hang rows short.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, stop_all, texts
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "123456:FAULT-matrix-token-not-real"
OPENAI_KEY = "sk-test-matrix-SECRET-987654321"
ADMIN = 5101
USER = 7001
PROVIDER_TIMEOUT = 1.0
APOLOGY_BOUND = 2 * PROVIDER_TIMEOUT + 2.0
PREFIX = "fm:"
APOLOGY = "😔 I can't answer right now, try again in a minute."
ALL_FAILED = "❌ All LLM providers failed!"
WAIT = 15.0


async def _refuse(fake: FakeLLM) -> None:
    await fake.stop()


def _mode(mode: str, **settings: float) -> Callable[[FakeLLM], Awaitable[None]]:
    async def inject(fake: FakeLLM) -> None:
        fake.set_mode(mode, **settings)

    return inject


FAULTS: dict[str, Callable[[FakeLLM], Awaitable[None]]] = {
    "refused": _refuse,
    "hang": _mode("hang"),
    "http500": _mode("http500"),
    "http408": _mode("http408"),
    "http409": _mode("http409"),
    "http429_retry_after": _mode("http429", retry_after=30),
    "http401": _mode("http401"),
    "http404_model": _mode("http404"),
    "garbage_body": _mode("garbage"),
    "empty_reply": _mode("empty"),
    "cut_after_first_token": _mode("cut_stream"),
    "truncated_stream": _mode("truncated_stream"),
}


@dataclass
class World:
    fake: FakeTelegram
    primary: FakeLLM
    fallback: FakeLLM
    redis: aioredis.Redis
    bot: BotProcess

    def log(self) -> str:
        return self.bot.log()

    async def says(self, chat_id: int, check: Callable[[str], bool], *, after: int, timeout: float = WAIT) -> Call:
        return await says(self.fake, chat_id, check, after=after, timeout=timeout, log=self.bot.report)

    def texts(self, chat_id: int, *, after: int) -> list[str]:
        return texts(self.fake, chat_id, after=after)

    async def heal(self) -> None:
        """Both providers healthy again, and the bot's fallback state forgotten."""
        for server in (self.primary, self.fallback):
            if not server.running:
                await server.start(server.port)
            server.set_mode("ok", retry_after=None)
        keys = [key async for key in self.redis.scan_iter(match=f"*{PREFIX}*")]
        if keys:
            await self.redis.delete(*keys)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    empty_redis(redis_server)
    workdir = tmp_path_factory.mktemp("fault_matrix")
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    primary = await FakeLLM("ollama").start()
    fallback = await FakeLLM("openai").start()
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    env = bot_env(fake, primary, fallback, redis_url=redis_server.url, admin=ADMIN, openai_key=OPENAI_KEY,
                  REDIS_PREFIX=PREFIX, OLLAMA_TIMEOUT=PROVIDER_TIMEOUT, OPENAI_TIMEOUT=PROVIDER_TIMEOUT,
                  LLM_CONNECT_TIMEOUT=0.5, LLM_FAILURE_COOLDOWN=60, LOG_LEVEL="INFO")
    world = World(fake, primary, fallback, client, await BotProcess.start(env, workdir))
    try:
        await world.bot.wait_polling(fake, timeout=30)
        mark = fake.mark()
        fake.send_message("hello", user_id=USER)  # the user's thread exists (and is named) from now on
        await world.says(USER, lambda t: t == "answer from ollama", after=mark)
        yield world
    finally:
        await world.bot.stop()
        await client.aclose()
        await stop_all(primary, fallback, fake)


@pytest.mark.parametrize("where", ["primary", "fallback", "both"])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault(world: World, fault: str, where: str) -> None:
    await world.heal()
    broken = {"primary": [world.primary], "fallback": [world.fallback], "both": [world.primary, world.fallback]}
    for server in broken[where]:
        await FAULTS[fault](server)
    log_mark = len(world.log())
    mark = world.fake.mark()
    sent = time.time()
    world.fake.send_message(f"question ({fault} on {where})", user_id=USER)
    try:
        reply = await world.says(USER, lambda t: t == APOLOGY or t.startswith("answer from "), after=mark)
        text = reply.params["text"]
        if where == "both" and text == APOLOGY:  # alerts go out in the background, one after another
            await world.says(ADMIN, lambda t: t.startswith(ALL_FAILED), after=mark)
        # A round trip through the bot, so a stray alert sent in the background has arrived.
        help_mark = world.fake.mark()
        world.fake.send_message("/help", user_id=USER)
        await world.says(USER, lambda t: t.startswith("I answer your messages"), after=help_mark)
        alerts = world.texts(ADMIN, after=mark)
        if where == "both":
            assert text == APOLOGY
            assert reply.at - sent < APOLOGY_BOUND, f"apology after {reply.at - sent:.1f} s"
            assert sum(t.startswith(ALL_FAILED) for t in alerts) == 1, (alerts, world.log()[log_mark:][-3000:])
            for provider in ("ollama", "openai"):
                assert sum(t.startswith(f"🔴 LLM provider {provider} ") for t in alerts) <= 1, alerts
        else:
            working = "openai" if where == "primary" else "ollama"
            assert text == f"answer from {working}", "the working provider's answer"
            assert not [t for t in alerts if t.startswith(f"🔴 LLM provider {working} ")], "healthy one called down"
            assert not [t for t in alerts if t.startswith(ALL_FAILED)], alerts
            if where == "fallback":
                assert alerts == [], "the fallback is not needed while the primary answers"
        log = world.log()[log_mark:]
        assert "Traceback" not in log, log[-4000:]
        assert OPENAI_KEY not in log
    finally:
        await world.heal()
