"""The bot's store: a burst through one small pool, and conversations written while Redis is away.

Real ``redis-server`` on loopback; SIGSTOP/SIGCONT and SIGKILL for the outages; the retry
interval passes on an injected monotonic clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from luka_bot.core.config import load_settings
from luka_bot.services.bot_store import BotStore, MemoryBotStore
from luka_bot.services.conversations import Conversations
from luka_bot.services.state_stores import Stores, build_stores
from tests.conftest import FakeClock
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

TOKEN = "4242:bot-store-test-token"
PREFIX = "luka:4242:"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stores(url: str, monotonic: Monotonic | None = None, **settings: object) -> Stores:
    config = load_settings(_env_file=None, BOT_TOKEN=TOKEN, REDIS_URL=url, REDIS_SOCKET_TIMEOUT=0.3, **settings)
    return build_stores(config, monotonic=monotonic) if monotonic else build_stores(config)


# --- the contract, memory and Redis ------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def bot_store(request, clock: FakeClock) -> AsyncIterator[BotStore]:
    if request.param == "memory":
        yield MemoryBotStore(clock)
        return
    stores = _stores(request.getfixturevalue("redis_url"), REDIS_BOT_PREFIX=f"t-{uuid.uuid4().hex[:6]}:")
    yield stores.bot
    await stores.close()


async def test_push_bounded_keeps_the_last_n_in_order_and_skips_values_already_there(bot_store: BotStore):
    assert await bot_store.get_list("h") == []
    for i in range(1, 6):
        await bot_store.push_bounded("h", f"m{i}", max_len=3, ttl=60)
    assert await bot_store.get_list("h") == ["m3", "m4", "m5"]
    await bot_store.push_bounded("h", "m5", "m6", "m7", max_len=3, ttl=60)
    assert await bot_store.get_list("h") == ["m5", "m6", "m7"]


async def test_values_and_lists_delete_and_expire(bot_store: BotStore, clock: FakeClock):
    await bot_store.set("moderation:1", "on", 60)
    await bot_store.push_bounded("l", "x", max_len=3, ttl=60)
    assert await bot_store.get_many(["moderation:1", "missing"]) == ["on", None]
    await bot_store.delete("moderation:1", "l")
    assert await bot_store.get_many(["moderation:1"]) == [None]
    assert await bot_store.get_list("l") == []
    short = 5.0 if isinstance(bot_store, MemoryBotStore) else 0.05
    await bot_store.push_bounded("l", "y", max_len=3, ttl=short)
    if isinstance(bot_store, MemoryBotStore):
        clock.advance(short)
    else:
        await asyncio.sleep(short + 0.05)
    assert await bot_store.get_list("l") == []


# --- a burst through a small pool ------------------------------------------------------------------------------


async def test_a_burst_of_500_users_leaves_every_thread_and_history_in_redis(redis_url: str, caplog):
    caplog.set_level(logging.WARNING)
    stores = _stores(redis_url, REDIS_MAX_CONNECTIONS=8)
    conversations = Conversations(stores.bot)
    users = range(1, 501)

    async def user_writes(user: int) -> None:  # what the chat handler does for a first message
        thread = await conversations.current_thread(user)
        assert thread is None or await conversations.history(user, thread) == []
        thread = await conversations.start_thread(user)
        await conversations.name_thread(user, thread, f"topic {user}")
        await conversations.add_turn(user, thread, f"q{user}", f"a{user}")

    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        await asyncio.gather(*(user_writes(user) for user in users))
        assert stores.kind == "redis"
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        for user in users:
            thread = await raw.get(f"{PREFIX}thread:current:{user}")
            assert thread is not None, user
            turns = [json.loads(t)["text"] for t in await raw.lrange(f"{PREFIX}history:{user}:{thread}", 0, -1)]
            assert turns == [f"q{user}", f"a{user}"]
            assert len(await raw.lrange(f"{PREFIX}threads:{user}", 0, -1)) == 1
        assert int((await raw.info("clients"))["connected_clients"]) <= 8 + 1
    finally:
        await raw.aclose()
        await stores.close()


# --- conversations written while Redis is away -------------------------------------------------------------------


@dataclass
class Chat:
    stores: Stores
    conversations: Conversations
    monotonic: Monotonic
    raw: Redis

    async def turns_in_redis(self, user: int, thread: str) -> list[str]:
        return [json.loads(t)["text"] for t in await self.raw.lrange(f"{PREFIX}history:{user}:{thread}", 0, -1)]


@pytest.fixture
async def chat(own_redis: RedisServer) -> AsyncIterator[Chat]:
    monotonic = Monotonic()
    stores = _stores(own_redis.url, monotonic)
    raw = Redis.from_url(own_redis.url, decode_responses=True)
    yield Chat(stores, Conversations(stores.bot, max_messages=200), monotonic, raw)
    if own_redis.paused:
        own_redis.resume()
    await raw.aclose()
    await stores.close()


async def _write_turns(chat: Chat, threads: dict[int, str], rounds: range) -> None:
    """Each user writes its turns in order; users write concurrently."""
    async def one_user(user: int) -> None:
        for i in rounds:
            await chat.conversations.add_turn(user, threads[user], f"u{user}-q{i}", f"u{user}-a{i}")

    await asyncio.gather(*(one_user(user) for user in threads))


def _expected(user: int, rounds: range) -> list[str]:
    return [text for i in rounds for text in (f"u{user}-q{i}", f"u{user}-a{i}")]


async def test_turns_written_while_redis_is_paused_reach_redis_in_order_exactly_once(chat: Chat, own_redis):
    users = range(1, 6)
    threads = {user: await chat.conversations.start_thread(user) for user in users}
    await _write_turns(chat, threads, range(2))

    own_redis.pause()  # hung: the first writes time out (and run on Redis when it wakes up)
    await _write_turns(chat, threads, range(2, 8))
    assert chat.stores.kind == "degraded"
    new_thread = await chat.conversations.start_thread(99)  # a new user meanwhile
    await chat.conversations.add_turn(99, new_thread, "q", "a")
    own_redis.resume()
    chat.monotonic.now += 5

    # Recovery with concurrent readers and writers: all queued writes land first, once each.
    await asyncio.gather(*(chat.conversations.history(user, threads[user]) for user in users),
                         _write_turns(chat, threads, range(8, 10)))
    assert chat.stores.kind == "redis"
    for user in users:
        assert await chat.turns_in_redis(user, threads[user]) == _expected(user, range(10))
    assert await chat.raw.get(f"{PREFIX}thread:current:99") == new_thread
    assert await chat.turns_in_redis(99, new_thread) == ["q", "a"]
    assert chat.stores.shared is not None and chat.stores.shared.pending == 0


async def test_turns_written_while_redis_is_dead_reach_the_restarted_redis(chat: Chat, own_redis, caplog):
    caplog.set_level(logging.WARNING)
    users = range(1, 4)
    threads = {user: await chat.conversations.start_thread(user) for user in users}
    own_redis.kill()
    await _write_turns(chat, threads, range(3))
    chat.monotonic.now += 5
    await _write_turns(chat, threads, range(3, 5))  # still dead at the retry: stays queued
    own_redis.restart()  # empty: what it held before died with it
    chat.monotonic.now += 5
    await _write_turns(chat, threads, range(5, 6))
    for user in users:
        assert await chat.turns_in_redis(user, threads[user]) == _expected(user, range(6))
    back = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(back) == 1 and "written back" in back[0], back
