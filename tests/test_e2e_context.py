"""End to end: prompts that outgrow a provider's context window, the real bot process against fakes.

Each test starts its own bot (`python -m luka_bot`) with the context windows it needs, against one
FakeTelegram, two FakeLLM servers (ollama = primary, openai = fallback) and a real redis-server.
The fakes count tokens as real tokenizers roughly do for English (UTF-8 bytes / 4) and, beyond
their `context_window`, answer as OpenAI-compatible servers do (HTTP 400 `context_length_exceeded`)
or, in Ollama's way, cut the prompt from the front without a word.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, stop_all, texts
from tests.fakes.fake_llm import FakeLLM, prompt_tokens
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "123456:E2E-context-token-not-real"
BOT_ID = TOKEN.split(":")[0]
OPENAI_KEY = "sk-test-e2e-context-SECRET-77"
ADMIN = 5001
WAIT = 20.0
APOLOGY = "😔 I can't answer right now, try again in a minute."
TOO_LONG = re.compile(r"📏 Your message is too long for me: I can read at most about (\d+) characters at once\. "
                      r"Please shorten it or send it in parts\.")
TOO_LONG_RU = re.compile(r"📏 Сообщение слишком длинное: за один раз я могу прочитать не больше примерно (\d+) "
                         r"символов\. Сократите его или отправьте по частям\.")
REAL_ANSWERS = {"answer from ollama", "answer from openai"}
SYSTEM_PROMPT_START = "You are Luka"


class Fakes:
    def __init__(self, fake: FakeTelegram, primary: FakeLLM, fallback: FakeLLM, redis_url: str):
        self.fake, self.primary, self.fallback, self.redis_url = fake, primary, fallback, redis_url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fakes(redis_server: RedisServer) -> AsyncIterator[Fakes]:
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    primary = await FakeLLM("ollama").start()
    fallback = await FakeLLM("openai").start()
    try:
        yield Fakes(fake, primary, fallback, redis_server.url)
    finally:
        await stop_all(primary, fallback, fake)


class Bot:
    """One bot process for one test, and what a user and the admin see of it."""

    def __init__(self, fakes: Fakes, process: BotProcess):
        self.fakes, self.process = fakes, process

    async def ask(self, text: str, user_id: int, match: str | Callable[[str], bool], *, lang: str = "en") -> Call:
        """Send `text` as `user_id`; the bot's message that `match`es (its answer, after any thread name)."""
        fake = self.fakes.fake
        mark = fake.mark()
        fake.send_message(text, user_id=user_id, language_code=lang)
        return await says(fake, user_id, match, after=mark, timeout=WAIT, log=self.process.report)

    async def cooldown(self, provider: str) -> str | None:
        client = aioredis.from_url(self.fakes.redis_url, decode_responses=True)
        try:
            return await client.get(f"llm:{BOT_ID}:cooldown:{provider}")
        finally:
            await client.aclose()

    def admin_alerts(self) -> list[str]:
        return texts(self.fakes.fake, ADMIN)


@pytest_asyncio.fixture(loop_scope="module")
async def start_bot(fakes: Fakes, redis_server: RedisServer, tmp_path) -> AsyncIterator[Callable[..., object]]:
    """`await start_bot(windows)`: a bot with `LLM_CONTEXT_WINDOWS=windows`, stopped after the test."""
    started: list[BotProcess] = []

    async def start(windows: dict[str, object]) -> Bot:
        empty_redis(redis_server)
        for llm in (fakes.primary, fakes.fallback):
            llm.set_mode("ok", context_window=None, overflow="openai")
            llm.reset_counts()
        env = bot_env(fakes.fake, fakes.primary, fakes.fallback, redis_url=fakes.redis_url, admin=ADMIN,
                      openai_key=OPENAI_KEY, OLLAMA_TIMEOUT=5, OPENAI_TIMEOUT=5, LOG_LEVEL="INFO",
                      LLM_CONTEXT_WINDOWS=json.dumps(windows),
                      TELEGRAM_CHAT_SENDS_PER_SECOND=40)  # one chat's messages one after another: no pacing here
        process = await BotProcess.start(env, tmp_path)
        started.append(process)
        await process.wait_polling(fakes.fake, timeout=30)
        return Bot(fakes, process)

    yield start
    for process in started:
        await process.stop()


def long_message(n: int, chars: int = 1500, word: str = "lorem") -> str:
    """A message of exactly `chars` characters, different for each `n`."""
    text = f"Message {n}: " + " ".join(f"{word}{i % 97}" for i in range(chars))
    return text[:chars]


def request_kept_the_prompt_and_the_message(request: dict[str, object], message: str) -> bool:
    messages = request["messages"]
    assert isinstance(messages, list)
    return (messages[0]["role"] == "system" and str(messages[0]["content"]).startswith(SYSTEM_PROMPT_START)
            and messages[-1] == {"role": "user", "content": message})


@pytest.mark.parametrize("overflow", ["openai", "truncate"])
async def test_a_thread_of_ten_long_messages_gets_ten_real_answers(fakes: Fakes, start_bot, overflow: str) -> None:
    """Both providers take ~8,000 characters; each message has 1,500. Before: 4 answers, then an apology
    for every later message of the thread (its history replayed each time), or, from Ollama, answers to a
    prompt cut from the front: the bot's instructions were the first to go."""
    bot = await start_bot({"ollama": 2000})
    for llm in (fakes.primary, fakes.fallback):
        llm.set_mode("ok", context_window=2000, overflow=overflow)
    user = 2001 if overflow == "openai" else 2002
    answers = []
    for n in range(10):
        message = long_message(n)
        call = await bot.ask(message, user, lambda t: t in REAL_ANSWERS or t == APOLOGY)
        answers.append(call.params["text"])
    assert answers == ["answer from ollama"] * 10, bot.process.report()
    chats = [r for r in fakes.primary.requests if r.get("tools")]  # the chat agent's (thread names have none)
    assert len(chats) == 10 and fakes.primary.truncated == 0, "the bot fits the prompt before sending it"
    for n, request in enumerate(chats):
        assert request_kept_the_prompt_and_the_message(request, long_message(n)), request["messages"][:1]
        assert prompt_tokens(request["messages"], request.get("tools")) <= 2000
    assert any(len(r["messages"]) > 2 for r in chats), "the thread's recent history goes along when it fits"
    assert fakes.fallback.count() == 0 and await bot.cooldown("ollama") is None


async def test_a_small_window_primary_leaves_the_long_message_to_a_large_window_fallback(
        fakes: Fakes, start_bot) -> None:
    """The primary takes ~6,000 characters, the fallback far more; six messages of 3,500 characters.
    Before: the primary's 400 went to the user as an apology, the fallback never tried."""
    bot = await start_bot({"ollama": 1500})
    fakes.primary.set_mode("ok", context_window=1500, overflow="openai")
    answers = [(await bot.ask(long_message(n, 3500), 2101, lambda t: t in REAL_ANSWERS or t == APOLOGY))
               .params["text"] for n in range(6)]
    assert answers == ["answer from openai"] * 6, bot.process.report()
    assert await bot.cooldown("ollama") is None, "a prompt too long for it is no failure of the primary"
    assert not any(t.startswith("🔴") for t in bot.admin_alerts()), "and no admin is told it is down"
    assert fakes.primary.requests == [] or all(
        prompt_tokens(r["messages"], r.get("tools")) <= 1500 for r in fakes.primary.requests)
    short = await bot.ask("and a short question?", 2101, lambda t: t in REAL_ANSWERS or t == APOLOGY)
    assert short.params["text"] == "answer from ollama", "the primary still answers what fits it"


async def test_a_message_too_long_for_every_provider_gets_told_the_limit(fakes: Fakes, start_bot) -> None:
    """Both providers take ~4,000 characters, one message has 4,000 (under Telegram's 4,096). Before:
    "try again in a minute", though retrying could never help. The bot knows the primary's window; the
    fallback's it learns from the fallback's own 400."""
    bot = await start_bot({"ollama": 1000})
    for llm in (fakes.primary, fakes.fallback):
        llm.set_mode("ok", context_window=1000, overflow="openai")
    answer = (await bot.ask(long_message(1, 4000), 2201, lambda t: t.startswith(("📏", "😔")))).params["text"]
    limit = TOO_LONG.fullmatch(answer)
    assert limit, answer
    chars = int(limit.group(1))
    assert 1000 <= chars < 4000, answer
    assert not bot.admin_alerts(), "a long message is no outage: no alert"
    assert await bot.cooldown("ollama") is None and await bot.cooldown("openai") is None

    fitting = await bot.ask(long_message(2, chars), 2201, lambda t: t in REAL_ANSWERS or t.startswith(("📏", "😔")))
    assert fitting.params["text"] in REAL_ANSWERS, "a message of the length the bot named is answered"

    russian = "Очень длинное сообщение о погоде и о жизни. " * 100
    answer = (await bot.ask(russian[:4000], 2202, lambda t: t.startswith(("📏", "😔")), lang="ru")).params["text"]
    limit_ru = TOO_LONG_RU.fullmatch(answer)
    assert limit_ru, answer
    assert int(limit_ru.group(1)) < chars, "Cyrillic takes more bytes per character: fewer of them fit"
