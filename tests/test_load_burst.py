"""The load burst at CI size: 100 private users write to the real bot process at once, three rounds.

The bot (`python -m luka_bot`, long polling against FakeTelegram) runs with a real redis-server and
two FakeLLM servers at 20 ms, under a thin wrapper that prints the bot's asyncio tasks on SIGUSR1 (so
tasks can be counted from outside; nothing else changes). Every round, 100 new users write at once
and all get a real reply. After each round the bot is back to where it was: the same number of
asyncio tasks as before the first round; sockets (/proc/<pid>/fd) and Redis connections (CLIENT LIST)
grow by less than `LEAK_BOUND` (USERS / 2) from round 1 to rounds 2 and 3 — idle pooled connections stay
open, but one leaked per message would add USERS a round; RSS grows by less than `RSS_GROWTH_BOUND`
from round 1 to round 3.

Admission control (docs/performance.md, "Load burst"): with BOT_MAX_CONCURRENT_UPDATES=U and
LLM_MAX_CONCURRENT_REQUESTS=L the providers never see more than L requests at once; the update bound
itself is checked on a Dispatcher.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiogram import Bot as AiogramBot
from aiogram import Dispatcher
from aiogram.types import Update

from luka_bot.core.config import ConfigError, Settings, load_settings
from luka_bot.services.inbox import Inbox, InboxMiddleware
from tests.conftest import wait_until
from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, stop_all
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "123456:LOAD-test-token-not-real"
USERS = 100
ROUNDS = 3
LATENCY = 0.02
MAX_UPDATES = 20
MAX_LLM_REQUESTS = 6
RSS_GROWTH_BOUND = 12 * 1024 * 1024
LEAK_BOUND = USERS // 2
REPLIES = {"answer from ollama"}

# Runs the real bot (`python -m luka_bot`) and, on SIGUSR1, writes the names of its asyncio tasks to argv[1].
WRAPPER = """
import asyncio, json, runpy, signal, sys
out = sys.argv.pop(1)
def dump(signum, frame):
    try:
        tasks = asyncio.all_tasks(asyncio.get_running_loop())
    except RuntimeError:
        return
    names = sorted(getattr(t.get_coro(), "__qualname__", "?") for t in tasks)
    with open(out + ".tmp", "w") as f:
        json.dump(names, f)
    import os
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
runpy.run_module("luka_bot", run_name="__main__", alter_sys=True)
"""


@dataclass
class Bot:
    fake: FakeTelegram
    primary: FakeLLM
    fallback: FakeLLM
    redis: aioredis.Redis
    bot: BotProcess
    tasks_path: Path

    @property
    def process(self) -> asyncio.subprocess.Process:
        return self.bot.process

    def log(self) -> str:
        return self.bot.log()

    def sockets(self) -> int:
        fd_dir = Path(f"/proc/{self.process.pid}/fd")
        count = 0
        for fd in fd_dir.iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except FileNotFoundError:
                continue
        return count

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    async def redis_clients(self) -> int:
        return len(await self.redis.client_list()) - 1  # not counting this test's own connection

    async def tasks(self) -> list[str]:
        """The bot's asyncio tasks (by coroutine name), dumped by the wrapper on SIGUSR1."""
        self.tasks_path.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        await wait_until(self.tasks_path.exists, rounds=200, interval=0.02)
        return json.loads(self.tasks_path.read_text())

    async def burst(self, first_user: int) -> None:
        """`USERS` users write at once; each gets a real reply."""
        users = set(range(first_user, first_user + USERS))
        mark = self.fake.mark()
        for user in sorted(users):
            self.fake.send_message(f"hello from {user}", user_id=user)

        def answered() -> set[int]:
            return {c.params.get("chat_id") for c in self.fake.calls[mark:]
                    if c.method == "sendMessage" and c.ok and c.params.get("text") in REPLIES} & users

        try:
            await wait_until(lambda: answered() == users, rounds=600, interval=0.05)
        except AssertionError:
            texts = [c.params.get("text") for c in self.fake.calls[mark:] if c.method == "sendMessage"]
            raise AssertionError(f"{len(answered())}/{USERS} answered; other replies: "
                                 f"{sorted(set(texts) - REPLIES)}\n{self.log()[-3000:]}") from None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bot]:
    empty_redis(redis_server)
    workdir = tmp_path_factory.mktemp("load_burst")
    fake = await FakeTelegram(token=TOKEN).start()
    primary = await FakeLLM("ollama", latency=LATENCY).start()
    fallback = await FakeLLM("openai", latency=LATENCY).start()
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    env = bot_env(fake, primary, fallback, redis_url=redis_server.url, openai_key="sk-test-load", LOG_LEVEL="INFO",
                  BOT_MAX_CONCURRENT_UPDATES=MAX_UPDATES, LLM_MAX_CONCURRENT_REQUESTS=MAX_LLM_REQUESTS,
                  USER_RATE_LIMIT=Settings.model_fields["USER_RATE_LIMIT"].default)  # one message per user: as shipped
    process = await BotProcess.start(env, workdir, argv=("-c", WRAPPER, str(workdir / "tasks.json")))
    world = Bot(fake, primary, fallback, client, process, workdir / "tasks.json")
    try:
        await process.wait_polling(fake, timeout=30)
        mark = fake.mark()
        fake.send_message("warm up", user_id=1)
        await fake.wait_for("sendMessage", lambda c: c.params.get("text") in REPLIES, timeout=15, after=mark)
        yield world
    finally:
        await process.stop()
        await client.aclose()
        await stop_all(primary, fallback, fake)


async def test_bursts_are_all_answered_and_leave_nothing_behind(bot: Bot) -> None:
    idle_tasks = await bot.tasks()
    after: list[dict[str, Any]] = []
    for round_no in range(ROUNDS):
        await bot.burst(first_user=10_000 * (round_no + 1))
        state: dict[str, Any] = {}

        def settled() -> bool:
            # the bot's own tasks end shortly after the last reply (typing senders, name tasks)
            if bot.tasks_path.exists():
                state["tasks"] = json.loads(bot.tasks_path.read_text())
                if len(state["tasks"]) <= len(idle_tasks):
                    return True
            bot.tasks_path.unlink(missing_ok=True)
            bot.process.send_signal(signal.SIGUSR1)
            return False

        try:
            await wait_until(settled, rounds=200, interval=0.05)
        except AssertionError:
            raise AssertionError(f"tasks leaked: idle {idle_tasks}, now {state.get('tasks')}") from None
        after.append({"sockets": bot.sockets(), "redis": await bot.redis_clients(), "rss": bot.rss()})
    first = after[0]
    for later in after[1:]:  # pools may still grow a little; a leak per message would add USERS per round
        assert later["sockets"] - first["sockets"] < LEAK_BOUND, after
        assert later["redis"] - first["redis"] < LEAK_BOUND, after
    assert after[-1]["rss"] - first["rss"] < RSS_GROWTH_BOUND, after
    assert "Traceback" not in bot.log()
    print(f"\nidle tasks {len(idle_tasks)}; after each round: {after}")


async def test_updates_handled_at_once_stay_within_the_bound(bot: Bot) -> None:
    """Each update makes at most two LLM calls at once (the reply and the thread name)."""
    assert bot.primary.count() >= ROUNDS * USERS
    assert bot.primary.max_in_flight <= 2 * MAX_UPDATES, bot.primary.max_in_flight


async def test_llm_requests_in_flight_stay_within_the_bound(bot: Bot) -> None:
    """300 users and their thread names went through at most LLM_MAX_CONCURRENT_REQUESTS calls at a time."""
    assert bot.primary.count() >= ROUNDS * USERS
    assert bot.primary.max_in_flight <= MAX_LLM_REQUESTS, bot.primary.max_in_flight
    assert bot.fallback.count() == 0, "a busy bot does not blame its healthy primary"


async def test_the_update_bound_makes_updates_wait_their_turn() -> None:
    """The bound (the inbox's middleware, polling and webhook alike): at most `limit` updates in a handler
    at once; the rest wait, none is dropped."""
    limit, total = 3, 10
    dp = Dispatcher()
    dp.update.outer_middleware(InboxMiddleware(Inbox(), limit))
    release = asyncio.Event()
    running = {"now": 0, "max": 0, "done": 0}

    @dp.message()
    async def slow(message: Any) -> None:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await release.wait()
        running["now"] -= 1
        running["done"] += 1

    tg_bot = AiogramBot("42:TEST")
    updates = [Update.model_validate({"update_id": i, "message": {
        "message_id": i, "date": 0, "chat": {"id": i, "type": "private"}, "from": {"id": i, "is_bot": False,
                                                                                    "first_name": "U"},
        "text": "hi"}}) for i in range(1, total + 1)]
    feeding = [asyncio.create_task(dp.feed_update(tg_bot, update)) for update in updates]
    await wait_until(lambda: running["now"] == limit)
    await asyncio.sleep(0)
    assert running["now"] == limit
    release.set()
    await asyncio.gather(*feeding)
    assert running == {"now": 0, "max": limit, "done": total}
    await tg_bot.session.close()


@pytest.mark.parametrize("name", ["BOT_MAX_CONCURRENT_UPDATES", "LLM_MAX_CONCURRENT_REQUESTS"])
async def test_admission_settings_refuse_negative_bounds(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None, **{name: -1})
    assert getattr(load_settings(_env_file=None, **{name: 0}), name) == 0, "0 = no bound"
