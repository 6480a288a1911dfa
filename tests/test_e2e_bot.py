"""End to end: the real bot process (`python -m luka_bot`) against fakes on 127.0.0.1.

One bot process serves the whole module; the tests are one story, in file order:
FakeTelegram (a fake Bot API the bot long-polls), two FakeLLM servers (ollama = primary,
openai = fallback) and a real redis-server (shared state). Every step waits for the bot's
answer (`fake.wait_for("sendMessage", predicate, after=mark)`), never for a fixed time.

Run with `-s` to see the `/llm_status` text an operator gets.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, stop_all, texts
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "123456:E2E-token-not-real-XYZ"
OPENAI_KEY = "sk-test-e2e-SECRET-123456789"
ADMIN = 5001
USER = 1001
RU_USER = 1002
SPAMMER = 1003
GROUP = -1001234567
WAIT = 15.0

ADMIN_COMMANDS = {"llm_status", "llm_force", "llm_clear"}
PUBLIC_COMMANDS = {"start", "help", "new", "threads", "moderation"}
REFUSAL_EN = "⛔ This command is for the bot's admins only."
REFUSAL_RU = "⛔ Эта команда только для администраторов бота."
APOLOGY_EN = "😔 I can't answer right now, try again in a minute."
APOLOGY_RU = "😔 Сейчас не могу ответить, попробуйте через минуту."
USAGE_PREFIX = "Usage: /llm_force <provider> [seconds]"
DELETE_VERDICT = '{"action": "delete", "reason": "spam"}'


@dataclass
class World:
    fake: FakeTelegram
    primary: FakeLLM
    fallback: FakeLLM
    redis: aioredis.Redis
    bot: BotProcess
    status_texts: list[str]
    shutdown_started: float = 0.0

    @property
    def process(self) -> asyncio.subprocess.Process:
        return self.bot.process

    def log(self) -> str:
        return self.bot.log()

    def log_tail(self, chars: int = 4000) -> str:
        return self.bot.log_tail(chars)

    async def says(self, chat_id: int, match: str | Callable[[str], bool], *, after: int,
                   timeout: float = WAIT) -> Call:
        """The bot's (successful) sendMessage to `chat_id` whose text equals / satisfies `match`."""
        return await says(self.fake, chat_id, match, after=after, timeout=timeout, log=self.bot.report)

    def texts(self, chat_id: int, *, after: int = 0) -> list[str]:
        return texts(self.fake, chat_id, after=after)

    async def ask(self, text: str, expected: str | Callable[[str], bool], *, user_id: int = USER,
                  lang: str = "en") -> Call:
        mark = self.fake.mark()
        self.fake.send_message(text, user_id=user_id, language_code=lang)
        return await self.says(user_id, expected, after=mark)

    async def key(self, name: str) -> Any:
        bot_id = self.fake.token.partition(":")[0]  # fallback state is namespaced by bot id
        raw = await self.redis.get(f"llm:{bot_id}:{name}")
        return json.loads(raw) if raw is not None else None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    empty_redis(redis_server)
    workdir = tmp_path_factory.mktemp("e2e_bot")  # no .env here
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")  # alerts go to the admin before they ever write
    primary = await FakeLLM("ollama").start()
    fallback = await FakeLLM("openai").start()
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    env = bot_env(fake, primary, fallback, redis_url=redis_server.url, admin=ADMIN, openai_key=OPENAI_KEY,
                  OLLAMA_TIMEOUT=2, OPENAI_TIMEOUT=2, LLM_CONNECT_TIMEOUT=0.5, LOG_LEVEL="INFO")
    world = World(fake, primary, fallback, client, await BotProcess.start(env, workdir), [])
    try:
        await world.bot.wait_polling(fake, timeout=30)
        yield world
    finally:
        await world.bot.stop()
        await client.aclose()
        await stop_all(primary, fallback, fake)
        print("\n=== /llm_status as the admin saw it ===\n" + "\n---\n".join(world.status_texts))


# --- the story -----------------------------------------------------------------------------------------


async def test_start_up_sets_admin_commands_only_for_admins(world: World) -> None:
    fake = world.fake
    calls = fake.calls_of("setMyCommands")
    assert calls, world.log_tail()
    for call in calls:
        scope = call.params.get("scope") or {"type": "default"}
        names = {c["command"] for c in call.params["commands"]}
        if scope["type"] == "default":
            assert names == PUBLIC_COMMANDS, call.summary()
        else:
            assert scope == {"type": "chat", "chat_id": ADMIN}, call.summary()
            assert names == PUBLIC_COMMANDS | ADMIN_COMMANDS, call.summary()
    admin_scope = {"type": "chat", "chat_id": ADMIN}
    assert {c["command"] for c in fake.commands(admin_scope)} == PUBLIC_COMMANDS | ADMIN_COMMANDS
    assert {c["command"] for c in fake.commands()} == PUBLIC_COMMANDS
    assert {c["command"] for c in fake.commands({"type": "chat", "chat_id": USER})} == set()
    russian = {c["command"]: c["description"] for c in fake.commands(language_code="ru")}
    assert russian.get("start") == "Начать", russian


async def test_user_chats_and_gets_the_primary_answer(world: World) -> None:
    mark = world.fake.mark()
    world.fake.send_message("hello", user_id=USER)
    await world.says(USER, "answer from ollama", after=mark)
    assert "🧵 answer from ollama" in world.texts(USER, after=mark), "a new thread gets its name"
    assert world.fallback.count() == 0
    assert world.fake.calls_of("sendChatAction"), "typing… while the model works"


async def test_primary_dies_and_the_fallback_answers_with_one_admin_alert(world: World) -> None:
    await world.primary.stop()
    mark = world.fake.mark()
    for text in ("are you there?", "still there?", "one more"):  # one batch, handled concurrently
        world.fake.send_message(text, user_id=USER)
    for _ in range(3):
        answer = await world.says(USER, "answer from openai", after=mark)
        mark = answer.index + 1
    assert world.texts(USER, after=0).count("answer from openai") == 3
    alert = await world.says(ADMIN, lambda t: t.startswith("🔴"), after=0)
    text = alert.params["text"]
    assert text.startswith("🔴 LLM provider ollama is down: "), text
    assert OPENAI_KEY not in text
    assert (await world.key("cooldown:ollama")) is not None


async def test_admin_status_shows_the_primary_cooling_and_openai_preferred(world: World) -> None:
    call = await world.ask("/llm_status", lambda t: t.startswith("🤖"), user_id=ADMIN)
    text = call.params["text"]
    world.status_texts.append(text)
    lines = text.splitlines()
    assert lines[0] == "🤖 LLM providers"
    assert lines[1].startswith("1. ollama — 🔴 cooling down, "), text
    assert any(line.strip().startswith("last error ") for line in lines), text
    assert "2. openai — 🟢 healthy" in lines, text
    assert "Preferred (cached): openai" in lines, text
    assert "Forced: none" in lines, text
    assert "State store: Redis (shared)" in lines, text
    assert OPENAI_KEY not in text
    data = [b["callback_data"] for row in call.params["reply_markup"]["inline_keyboard"] for b in row]
    assert data == ["llmadm:force:ollama", "llmadm:force:openai", "llmadm:clear:", "llmadm:check:",
                    "llmadm:refresh:"]


async def test_non_admin_force_and_clear_change_nothing(world: World) -> None:
    before = (await world.key("forced"), await world.key("preferred"), await world.key("cooldown:ollama"))
    await world.ask("/llm_force openai 600", REFUSAL_EN, user_id=USER)
    await world.ask("/llm_clear", REFUSAL_EN, user_id=USER)
    await world.ask("/llm_force openai 600", REFUSAL_RU, user_id=RU_USER, lang="ru")
    after = (await world.key("forced"), await world.key("preferred"), await world.key("cooldown:ollama"))
    assert after == before
    assert before[0] is None and before[1]["provider"] == "openai" and before[2] is not None


@pytest.mark.parametrize("command", ["/llm_force", "/llm_force nosuch", "/llm_force openai abc",
                                     "/llm_force openai 0", "/llm_force openai -5", "/llm_force openai 999999"])
async def test_admin_bad_arguments_get_usage(world: World, command: str) -> None:
    await world.ask(command, lambda t: t.startswith(USAGE_PREFIX), user_id=ADMIN)
    assert await world.key("forced") is None


async def test_clear_forgets_alerts_too_so_a_new_outage_alerts_again(world: World) -> None:
    """/llm_clear while the primary is still dead: the next request fails on it again and, the
    clear having wiped the alert dedupe keys and the last error too, admins hear about it again."""
    await world.ask("/llm_clear", lambda t: t.startswith("🧹 Cleared."), user_id=ADMIN)
    assert await world.key("cooldown:ollama") is None
    assert await world.key("last_error:ollama") is None
    mark = world.fake.mark()
    await world.ask("again?", "answer from openai")
    assert await world.key("cooldown:ollama") is not None, "the request failed on the dead primary again"
    await world.says(ADMIN, lambda t: t.startswith("🔴"), after=mark)  # the alert waits its turn in the admin chat
    await world.ask("/help", lambda t: t.startswith("I answer your messages"))  # no third one comes
    assert len([t for t in world.texts(ADMIN) if t.startswith("🔴")]) == 2, "one alert per outage, again after a clear"


async def test_force_routes_to_openai_and_clear_returns_to_the_primary(world: World) -> None:
    await world.primary.start(world.primary.port)
    await world.ask("/llm_clear", lambda t: t.startswith("🧹 Cleared."), user_id=ADMIN)
    await world.ask("back to you?", "answer from ollama")

    reply = await world.ask("/llm_force openai 600", lambda t: t.startswith("✅ openai forced for 10m 0s (until "),
                            user_id=ADMIN)
    assert "Other providers stay behind it as fallbacks." in reply.params["text"]
    assert (await world.key("forced"))["provider"] == "openai"
    primary_before = world.primary.count()
    await world.ask("who answers now?", "answer from openai")
    await world.ask("and now?", "answer from openai")
    assert world.primary.count() == primary_before, "the healthy primary is not asked while openai is forced"

    call = await world.ask("/llm_status", lambda t: t.startswith("🤖"), user_id=ADMIN)
    world.status_texts.append(call.params["text"])
    assert any(line.startswith("Forced: openai, ") for line in call.params["text"].splitlines())

    cleared = await world.ask("/llm_clear", lambda t: t.startswith("🧹 Cleared."), user_id=ADMIN)
    assert "forced provider: openai" in cleared.params["text"]
    assert await world.key("forced") is None
    await world.ask("primary again?", "answer from ollama")


async def test_group_message_judged_delete_is_deleted_with_a_notice(world: World) -> None:
    fake = world.fake
    fake.chat_members[(GROUP, USER)] = "administrator"
    mark = fake.mark()
    fake.send_message("/moderation on", user_id=USER, chat_id=GROUP, chat_type="supergroup", chat_title="Chat")
    await world.says(GROUP, "🛡 Moderation is on in this group.", after=mark)

    world.primary.reply = world.fallback.reply = DELETE_VERDICT
    try:
        mark = fake.mark()
        spam = fake.send_message("BUY CHEAP PILLS http://spam.example", user_id=SPAMMER, chat_id=GROUP,
                                 chat_type="supergroup", first_name="Spammer")
        await world.says(GROUP, "🛡 A message from Spammer was removed: spam", after=mark)
        delete = await fake.wait_for("deleteMessage", after=mark)
        assert delete.ok and delete.params["message_id"] == spam["message_id"]
        assert fake.is_deleted(GROUP, spam["message_id"])
    finally:
        world.primary.reply = "answer from ollama"
        world.fallback.reply = "answer from openai"


async def test_a_new_thread_gets_its_name(world: World) -> None:
    await world.ask("/new", "🧵 New thread started. What shall we talk about?")
    world.primary.reply = "Trip to Rome"
    try:
        mark = world.fake.mark()
        world.fake.send_message("Plan a three-day trip to Rome for me", user_id=USER)
        await world.says(USER, "🧵 Trip to Rome", after=mark)
        await world.says(USER, "Trip to Rome", after=mark)
    finally:
        world.primary.reply = "answer from ollama"
    await world.ask("/threads", lambda t: t.startswith("🧵 Your recent threads:") and "1. Trip to Rome" in t)


async def test_russian_speaking_user_gets_russian_texts(world: World) -> None:
    await world.ask("/start", lambda t: t.startswith("👋 Привет! Я Лука."), user_id=RU_USER, lang="ru")
    await world.ask("/new", "🧵 Новая ветка начата. О чём поговорим?", user_id=RU_USER, lang="ru")


async def test_both_providers_down_apology_then_recovery(world: World) -> None:
    mark = world.fake.mark()
    await world.primary.stop()
    await world.fallback.stop()
    started = time.monotonic()
    await world.ask("is anyone there?", APOLOGY_EN)
    await world.ask("есть кто?", APOLOGY_RU, user_id=RU_USER, lang="ru")
    assert time.monotonic() - started < 10
    all_failed = await world.says(ADMIN, lambda t: t.startswith("❌ All LLM providers failed!"), after=0)
    assert OPENAI_KEY not in all_failed.params["text"]
    assert world.process.returncode is None, "the bot keeps running"

    await world.primary.start(world.primary.port)
    await world.fallback.start(world.fallback.port)
    await world.ask("and now?", "answer from ollama")
    await world.says(ADMIN, "🟢 LLM provider ollama is back and serving again.", after=0)
    ollama_alerts = [t for t in world.texts(ADMIN, after=mark) if t.startswith("🔴 LLM provider ollama")]
    assert len(ollama_alerts) == 1, ollama_alerts
    all_failed_alerts = [t for t in world.texts(ADMIN, after=mark) if t.startswith("❌")]
    assert len(all_failed_alerts) == 1, "three requests failed everywhere, one alert"


async def test_sigterm_with_a_reply_in_flight_exits_0(world: World) -> None:
    world.primary.latency = 1.0  # slow, but well inside OLLAMA_TIMEOUT=2
    before = world.primary.count()
    world.fake.send_message("a slow question", user_id=USER)
    deadline = time.monotonic() + WAIT
    while world.primary.count() == before:  # the chat request reached the primary: a reply is in flight
        assert time.monotonic() < deadline, "the chat request never reached the primary\n" + world.log_tail()
        await asyncio.sleep(0.02)
    world.shutdown_started = time.monotonic()
    world.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(world.process.wait(), timeout=10)
    except TimeoutError:
        raise AssertionError("the bot did not exit within 10 s of SIGTERM\n" + world.log_tail()) from None
    assert code == 0, world.log_tail()
    assert time.monotonic() - world.shutdown_started < 5, "SIGTERM → exit takes a few seconds at most"


async def test_shutdown_records_no_provider_failure(world: World) -> None:
    assert world.process.returncode is not None, "runs after the SIGTERM step"
    log = world.log()
    after_signal = log[log.index("Received SIGTERM"):]
    assert "Provider ollama failed" not in after_signal, after_signal[:3000]
    assert await world.key("cooldown:ollama") is None, (await world.key("cooldown:ollama"), after_signal[:3000])


async def test_log_keeps_secrets_and_has_the_seed_markers(world: World) -> None:
    log = world.log()
    assert TOKEN not in log and TOKEN.split(":")[1] not in log, "the bot token leaked into the log"
    assert OPENAI_KEY not in log, "the OpenAI key leaked into the log"
    assert "✅ LLMProviderFallback initialized" in log
    assert "⚠️ Primary provider failed, using fallback: openai" in log
    assert "👋 luka_bot stopped" in log


async def test_log_has_no_tracebacks(world: World) -> None:
    log = world.log()
    assert "Task exception was never retrieved" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
