"""No message lost to a killed process: the real bot (long polling) is SIGKILLed mid-reply and restarted.

The real bot process (`python -m luka_bot`) long-polls a FakeTelegram, with its own redis-server
(this module pauses it) and one `EchoLLM` as its only provider: it answers "answer to: <question>",
and a question containing "slow" waits at the provider until the test lets it go (`release()`), so
replies are in flight for as long as a test needs. Each test starts the bot, kills it (SIGKILL: no
drain, no hand-back), starts it again, and reads what every user got. The orphan bound is 2 s
(`INBOX_ORPHAN_AFTER`), late answers quote their question after 1 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from tests.conftest import wait_until
from tests.fakes.bot_process import BotProcess, bot_env, log_tails, says, stop_all, texts
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer, redis_server_available

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(180),
    pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed"),
]

TOKEN = "123456:INBOX-polling-token-not-real"
WAIT = 30.0
ORPHAN_AFTER = 2


class EchoLLM(FakeLLM):
    """Answers "answer to: <the last user message>"; a message with "slow" in it waits for `release()`."""

    def __init__(self, name: str = "ollama") -> None:
        super().__init__(name)
        self.gate = asyncio.Event()
        self.waiting = 0
        """Chat requests held at the gate right now (replies in flight)."""

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        self.gate.set()

    async def _chat_completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if "slow" in self.question(body) and body.get("stream") and not self.gate.is_set():
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        return await super()._chat_completion(request)  # (aiohttp keeps the body it read)

    @staticmethod
    def question(body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages", [])):
            if message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else json.dumps(content)
        return ""

    def _completion(self, body: dict[str, Any], model: str, *, empty: bool = False) -> dict[str, Any]:
        self.reply = f"answer to: {self.question(body)}"
        return super()._completion(body, model, empty=empty)

    def _stream_chunks(self, body: dict[str, Any], model: str, *, empty: bool = False) -> list[dict[str, Any]]:
        self.reply = f"answer to: {self.question(body)}"
        return super()._stream_chunks(body, model, empty=empty)


def answers(fake: FakeTelegram, chat_id: int) -> list[Call]:
    """The bot's answers to a chat (not thread names), oldest first."""
    return [c for c in fake.calls_of("sendMessage") if c.ok and c.params.get("chat_id") == chat_id
            and c.params.get("text", "").startswith("answer to: ")]


@dataclass
class World:
    fake: FakeTelegram
    llm: EchoLLM
    redis: RedisServer
    client: aioredis.Redis
    workdir: Path
    bots: list[BotProcess] = field(default_factory=list)

    @property
    def bot(self) -> BotProcess:
        return self.bots[-1]

    async def start(self) -> BotProcess:
        env = bot_env(self.fake, self.llm, redis_url=self.redis.url, OLLAMA_TIMEOUT=60,
                      INBOX_ORPHAN_AFTER=ORPHAN_AFTER, LATE_ANSWER_QUOTE_AFTER=1, LOG_LEVEL="INFO")
        mark = self.fake.mark()
        self.bots.append(await BotProcess.start(env, self.workdir, log_name=f"bot{len(self.bots)}.log"))
        try:
            await self.fake.wait_polling(timeout=60, after=mark)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.bot.report()}") from None
        return self.bot

    async def running(self) -> BotProcess:
        """The bot, started if the story has not started it yet (a test run on its own)."""
        if not self.bots or self.bot.process.returncode is not None:
            return await self.start()
        return self.bot

    async def kill(self) -> float:
        """SIGKILL: the process dies with its replies in flight; the moment it died (wall clock, as `Call.at`)."""
        await self.bot.stop()
        return time.time()

    async def in_flight(self, count: int) -> None:
        """Until `count` replies wait at the provider."""
        await wait_until(lambda: self.llm.waiting == count, rounds=int(WAIT / 0.02), interval=0.02)

    async def pending(self) -> int:
        return await self.client.xlen("luka:123456:inbox")

    async def all_finished(self) -> None:
        """Until no message waits in Redis (an entry is finished just after its answer went out)."""
        for _ in range(int(WAIT / 0.02)):
            if await self.pending() == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{await self.pending()} message(s) still wait\n{self.logs()}")

    async def answer(self, chat_id: int, question: str, *, after: int = 0) -> Call:
        return await says(self.fake, chat_id, f"answer to: {question}", after=after, timeout=WAIT,
                          log=self.logs)

    def logs(self) -> str:
        return log_tails(self.bots)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    server = RedisServer().start()
    fake = await FakeTelegram(token=TOKEN).start()
    llm = await EchoLLM().start()
    client = aioredis.from_url(server.url, decode_responses=True)
    world = World(fake, llm, server, client, tmp_path_factory.mktemp("inbox_polling"))
    try:
        yield world
    finally:
        llm.release()
        for bot in world.bots:
            await bot.stop()
        await client.aclose()
        await stop_all(llm, fake)
        if server.paused:
            server.resume()
        server.stop()
    for i, bot in enumerate(world.bots):
        assert "Traceback" not in bot.log(), f"bot {i}:\n{bot.log_tail()}"
        assert TOKEN not in bot.log()


# --- the story ------------------------------------------------------------------------------------------


async def test_killed_mid_reply_then_restarted_answers_every_message_once(world: World) -> None:
    users = list(range(2001, 2011))
    await world.running()
    world.llm.hold()
    questions = {user: world.fake.send_message(f"slow question of {user}", user_id=user) for user in users}
    await world.in_flight(len(users))
    assert await world.pending() == len(users), "recorded while being answered"
    killed_at = await world.kill()
    world.llm.release()
    await world.start()
    calls = [await world.answer(user, f"slow question of {user}") for user in users]
    seconds = max(c.at for c in calls) - killed_at
    for user in users:
        (answer,) = answers(world.fake, user)
        quoted = answer.params.get("reply_parameters") or {}
        assert quoted.get("message_id") == questions[user]["message_id"], "a late answer quotes its question"
    await world.all_finished()
    print(f"\npolling, SIGKILL with {len(users)} replies in flight: {len(users)}/{len(users)} answered after "
          f"the restart, the last {seconds:.1f}s after the kill (orphan bound {ORPHAN_AFTER}s), 0 duplicates")


async def test_killed_right_after_an_answer_it_is_not_answered_twice(world: World) -> None:
    quick_user, slow_users = 2101, [2102, 2103, 2104]
    await world.running()
    world.llm.hold()
    for user in slow_users:
        world.fake.send_message("slow one", user_id=user)
    await world.in_flight(len(slow_users))
    mark = world.fake.mark()
    world.fake.send_message("quick one", user_id=quick_user)
    sent = await world.answer(quick_user, "quick one", after=mark)
    started = time.time()
    while await world.pending() > len(slow_users):  # the answer's delivery is being recorded
        await asyncio.sleep(0.001)
    window_ms = (time.time() - max(started, sent.at)) * 1000
    await world.kill()
    world.llm.release()
    await world.start()
    for user in slow_users:
        await world.answer(user, "slow one")
    assert [c.params["text"] for c in answers(world.fake, quick_user)] == ["answer to: quick one"]
    assert all(len(answers(world.fake, user)) == 1 for user in slow_users)
    print(f"\nanswer sent → its delivery recorded in Redis within {window_ms:.1f} ms (seen from the test); "
          "a kill after that is never answered twice")


async def test_killed_while_its_answer_waits_on_telegram_the_stored_answer_is_sent_not_asked_again(
        world: World) -> None:
    """The answer was stored, then Telegram's flood control held it back, and the process died: the restarted bot
    sends that answer once, without asking the provider again with an answer the user never saw in its history."""
    user = 2151
    await world.running()
    world.fake.send_message("first", user_id=user)  # the thread exists and has its name
    await world.answer(user, "first")
    world.fake.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 60",
                         retry_after=60)
    world.fake.send_message("second", user_id=user)

    def held_back() -> bool:
        return any(not c.ok and c.params.get("chat_id") == user and c.params.get("text") == "answer to: second"
                   for c in world.fake.calls_of("sendMessage") if c.done)
    await wait_until(held_back, rounds=int(WAIT / 0.02), interval=0.02)
    await world.kill()
    await world.start()
    await world.answer(user, "second")
    await world.all_finished()

    asked = [r for r in world.llm.requests if EchoLLM.question(r) == "second" and r.get("stream")]
    assert len(asked) == 1, "answered from what was stored, not asked again"
    assert [c.params["text"] for c in answers(world.fake, user)] == ["answer to: first", "answer to: second"]
    assert len([t for t in texts(world.fake, user) if t.startswith("🧵")]) == 1, "one thread, one name"


async def test_a_chats_order_is_kept_after_a_claim(world: World) -> None:
    user = 2201
    await world.running()
    world.llm.hold()
    world.fake.send_message("slow first", user_id=user)
    await world.in_flight(1)
    world.fake.send_message("second", user_id=user)
    world.fake.send_message("third", user_id=user)
    await wait_until(lambda: world.fake.pending_updates == [], rounds=int(WAIT / 0.02), interval=0.02)
    await world.kill()
    world.llm.release()
    await world.start()
    await world.answer(user, "third")
    assert [c.params["text"] for c in answers(world.fake, user)] == [
        "answer to: slow first", "answer to: second", "answer to: third"]
    history = [r for r in world.llm.requests if EchoLLM.question(r) == "third" and r.get("stream")]
    assert "answer to: second" in json.dumps(history[-1]["messages"]), "the third was answered after the second"


async def test_concurrent_first_messages_of_a_user_make_one_thread_and_one_name(world: World) -> None:
    user = 2301
    await world.running()
    mark = world.fake.mark()
    for text in ("hi there", "are you here?", "hello?"):
        world.fake.send_message(text, user_id=user)
    for text in ("hi there", "are you here?", "hello?"):
        await world.answer(user, text, after=mark)
    names = [t for t in texts(world.fake, user, after=mark) if t.startswith("🧵")]
    assert len(names) == 1, names
    mark = world.fake.mark()
    world.fake.send_message("/threads", user_id=user)
    listing = await says(world.fake, user, lambda t: t.startswith("🧵 Your recent threads"), after=mark,
                         timeout=WAIT, log=world.logs)
    assert listing.params["text"].count("\n") == 1, listing.params["text"]


async def test_sigterm_hands_back_a_reply_longer_than_the_drain(world: World) -> None:
    """A deploy stops the bot (SIGTERM): replies in flight get the drain (10 s); one still running then is
    handed back, and the bot started again answers it."""
    user = 2501
    bot = await world.running()
    world.llm.hold()
    world.fake.send_message("slow beyond the drain", user_id=user)
    await world.in_flight(1)
    await bot.stop(grace=60)
    assert bot.process.returncode == 0, bot.log_tail()
    world.llm.release()
    await world.start()
    await world.answer(user, "slow beyond the drain")
    assert len(answers(world.fake, user)) == 1
    assert "handed back 1 unanswered message(s)" in bot.log(), bot.log_tail()


async def test_redis_paused_while_messages_arrive_loses_nothing(world: World) -> None:
    """Redis stops answering (SIGSTOP): the bot keeps answering from memory, and Telegram's confirmation
    waits for each answer, so a kill then loses nothing either: Telegram sends those updates again."""
    quick_user, slow_users = 2401, [2402, 2403, 2404]
    await world.running()
    world.redis.pause()
    try:
        mark = world.fake.mark()
        world.fake.send_message("quick while paused", user_id=quick_user)
        await world.answer(quick_user, "quick while paused", after=mark)
        world.llm.hold()
        for user in slow_users:
            world.fake.send_message("slow while paused", user_id=user)
        await world.in_flight(len(slow_users))
        await world.kill()
    finally:
        world.redis.resume()
    world.llm.release()
    await world.start()
    for user in slow_users:
        await world.answer(user, "slow while paused")
    assert [len(answers(world.fake, u)) for u in (quick_user, *slow_users)] == [1, 1, 1, 1]
    log = world.bots[-2].log()
    assert log.count("Redis state store unavailable") == 1, log[-3000:]
    assert "Traceback" not in log
