"""Telegram's flood control against the real bot: every answer delivered, 429s rare, one budget per bot.

The fake Bot API answers message calls beyond Telegram-like rates with 429 and `retry_after`
(`tests/fakes/flood_control.py`: 30/s overall, 1/s per chat with a burst of 3); the real bot
process (`python -m luka_bot`, long polling; then two webhook replicas) runs with a real
redis-server and a FakeLLM primary. Each test starts from full buckets (a fresh `FloodControl`)
and waits for the bot's answers, never for a fixed time. The polling tests are one story.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.conftest import wait_until
from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, scrape_metrics, stop_all
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.flood_control import MESSAGE_METHODS, FloodControl
from tests.fakes.redis_server import RedisServer, free_port
from tests.test_e2e_streaming import PacedLLM

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

TOKEN = "123456:FLOOD-test-token-not-real"
SECRET = "flood-test-SECRET-0123456789"
USERS = 80
WAIT = 60.0
REPLY = "answer from ollama"
GREETING = "👋 Hi! I'm Luka."


@dataclass
class World:
    fake: FakeTelegram
    primary: PacedLLM
    bots: list[BotProcess]
    metrics_port: int | None = None
    user_ids: itertools.count = field(default_factory=lambda: itertools.count(8001))
    ports: list[int] = field(default_factory=list)
    update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def flood(self) -> FloodControl:
        """Telegram's buckets, full: from now on the fake answers 429 beyond its rates."""
        self.fake.flood_control = FloodControl()
        return self.fake.flood_control

    def new_users(self, count: int) -> list[int]:
        return [next(self.user_ids) for _ in range(count)]

    async def write(self, users: list[int], text: str, http: aiohttp.ClientSession | None = None) -> None:
        """Every user writes at once (webhook replicas: posted alternately, as a load balancer would)."""
        messages = [self.fake.send_message(f"{text} {user}", user_id=user) for user in users]
        if not self.ports:
            return
        assert http is not None

        async def post(turn: int, message: dict) -> None:
            url = f"http://127.0.0.1:{self.ports[turn % 2]}/webhook"
            async with http.post(url, json={"update_id": next(self.update_ids), "message": message},
                                 headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
                assert response.status == 200

        await asyncio.gather(*(post(turn, m) for turn, m in enumerate(messages)))

    async def answers(self, users: list[int], match: str | Callable[[str], bool], *, after: int) -> list[Call]:
        return [await says(self.fake, user, match, after=after, timeout=WAIT, log=self.logs) for user in users]

    def refused(self, after: int = 0, method: str | None = None) -> list[Call]:
        return [c for c in self.fake.calls[after:] if c.error and c.error.get("error_code") == 429
                and (method is None or c.method == method)]

    def message_calls(self, after: int = 0) -> list[Call]:
        return [c for c in self.fake.calls[after:] if c.method.lower() in MESSAGE_METHODS]

    def logs(self) -> str:
        return "\n".join(f"--- bot {i} log (tail) ---\n{bot.log_tail(2500)}" for i, bot in enumerate(self.bots))

    async def metrics(self) -> dict[str, float]:
        return await scrape_metrics(f"http://127.0.0.1:{self.metrics_port}/metrics")


def _env(world_fake: FakeTelegram, primary: PacedLLM, redis_url: str, **settings: object) -> dict[str, str]:
    return bot_env(world_fake, primary, redis_url=redis_url, OLLAMA_TIMEOUT=10, LOG_LEVEL="INFO", **settings)


async def _fakes(redis_server: RedisServer) -> tuple[FakeTelegram, PacedLLM]:
    """An empty Redis, a fake Bot API (flood control comes with each test) and a fast-streaming primary."""
    empty_redis(redis_server)
    fake = await FakeTelegram(token=TOKEN).start()
    primary = PacedLLM("ollama", latency=0.02)
    primary.pace = 0.0
    await primary.start()
    return fake, primary


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    fake, primary = await _fakes(redis_server)
    metrics_port = free_port()
    env = _env(fake, primary, redis_server.url, STREAM_DRAFT_INTERVAL=0.3, METRICS_PORT=metrics_port,
               METRICS_HOST="127.0.0.1")
    bot = await BotProcess.start(env, tmp_path_factory.mktemp("flood"))
    world = World(fake, primary, [bot], metrics_port)
    try:
        await bot.wait_polling(fake, timeout=60)
        yield world
    finally:
        await bot.stop(grace=15)
        await stop_all(primary, fake)
    log = bot.log()
    assert "Traceback" not in log, log[-3000:]
    assert TOKEN not in log


# --- the story (long polling) ---------------------------------------------------------------------------


async def test_a_burst_under_flood_control_gets_every_answer_with_few_429s(world: World) -> None:
    flood = world.flood()
    users = world.new_users(USERS)
    mark = world.fake.mark()
    await world.write(users, "hello from")
    await world.answers(users, REPLY, after=mark)
    sends = world.message_calls(mark)
    refused = world.refused(mark)
    assert len(refused) <= 0.02 * len(sends), \
        f"{len(refused)} of {len(sends)} message calls answered 429 ({dict(flood.refused_by)})"
    assert flood.accepted["sendMessage"] >= 2 * USERS, "a thread name and an answer each"
    assert " ERROR " not in world.bots[0].log()


async def test_a_final_answer_is_not_delayed_by_draft_frames(world: World) -> None:
    """Streamers keep asking for frames (every 0.3 s) while others get command replies: the replies
    go first, no frame is sent while one waits, and none is answered 429."""
    world.flood()
    world.primary.pace = 1.0  # each reply streams for ~3 s
    streamers, quick = world.new_users(30), world.new_users(60)
    try:
        mark = world.fake.mark()
        await world.write(streamers, "tell me a story")
        await world.fake.wait_for("sendMessageDraft", lambda c: c.ok, timeout=WAIT, after=mark)
        quick_mark = world.fake.mark()
        for user in quick:
            world.fake.send_message("/start", user_id=user)
        greetings = await world.answers(quick, lambda t: t.startswith(GREETING), after=quick_mark)
        await world.answers(streamers, REPLY, after=mark)
    finally:
        world.primary.pace = 0.0
    first, last = min(c.index for c in greetings), max(c.index for c in greetings)
    frames_between = [c for c in world.fake.calls[first:last] if c.method == "sendMessageDraft"]
    assert len(frames_between) <= 2, f"{len(frames_between)} frames went out while command replies waited"
    assert world.refused(quick_mark, "sendMessage") == [], world.fake.flood_control.refused_by
    assert world.fake.flood_control and world.fake.flood_control.accepted["sendMessageDraft"] >= 1
    scraped = await world.metrics()
    assert scraped.get("telegram_requests_total{'method': 'SendMessageDraft', 'outcome': 'skipped'}", 0) > 0


async def test_a_bot_wide_retry_after_pauses_every_chat(world: World) -> None:
    flood = world.flood()
    users = world.new_users(USERS)
    mark = world.fake.mark()
    await world.write(users, "hello again from")
    await wait_until(lambda: flood.total_accepted >= 50, rounds=4000, interval=0.01)
    flood.flood_bot(3)  # the whole bot is flooded for 3 s, mid-burst
    await world.answers(users, REPLY, after=mark)
    refused = world.refused(mark)
    assert 1 <= len(refused) <= 5, f"{len(refused)} calls answered 429: every chat should pause after two"
    resumed = next(c for c in world.message_calls(refused[0].index) if c.ok)
    assert resumed.at - refused[0].at >= 2.9, "no chat sent before the bot-wide retry_after ran out"
    log = world.bots[0].log()
    assert "now pauses every chat" in log
    scraped = await world.metrics()
    assert scraped["telegram_flood_waits_total{'scope': 'bot'}"] >= 1
    assert scraped["telegram_requests_total{'method': 'SendMessage', 'outcome': 'flood'}"] >= 1
    assert scraped["telegram_send_wait_seconds_count{}"] >= 3 * USERS
    assert scraped["telegram_sends_waiting{}"] == 0


# --- two webhook replicas -------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    fake, primary = await _fakes(redis_server)
    workdir = tmp_path_factory.mktemp("flood_replicas")
    ports = [free_port(), free_port()]
    # Both replicas and the fakes share this machine's cores: a longer Redis timeout and fewer updates each
    # keep a busy event loop from timing Redis out (then each replica would pace alone, as it must).
    bots = [await BotProcess.start(_env(fake, primary, redis_server.url, WEBHOOK_URL=f"http://127.0.0.1:{port}",
                                        WEBHOOK_HOST="127.0.0.1", WEBHOOK_PORT=port, WEBHOOK_SECRET=SECRET,
                                        REDIS_SOCKET_TIMEOUT=3, BOT_MAX_CONCURRENT_UPDATES=16),
                                   workdir, log_name=f"replica{i}.log") for i, port in enumerate(ports)]
    world = World(fake, primary, bots, ports=ports)
    try:
        for port, bot in zip(ports, bots, strict=True):
            await bot.wait_listening(f"http://127.0.0.1:{port}/webhook", timeout=120, name="a replica")
        yield world
    finally:
        await asyncio.gather(*(bot.stop(grace=15) for bot in bots))
        await stop_all(primary, fake)
    for bot in bots:
        assert "Traceback" not in bot.log(), bot.log()[-3000:]


async def test_two_replicas_spend_one_budget(replicas: World, redis_server: RedisServer) -> None:
    replicas.flood()
    users = replicas.new_users(USERS)
    mark = replicas.fake.mark()
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            await replicas.write(users, "hello from", http)
            await wait_until(lambda: len(replicas.message_calls(mark)) >= 40, rounds=4000, interval=0.01)
            assert await client.exists("luka:123456:send:all"), "the overall bucket is in Redis, under the bot's prefix"
            await replicas.answers(users, REPLY, after=mark)
    finally:
        await client.aclose()
    sends, refused = replicas.message_calls(mark), replicas.refused(mark)
    # Two replicas pacing on their own would send at twice Telegram's rate: half the calls refused.
    assert len(refused) <= 0.02 * len(sends), f"{len(refused)} of {len(sends)} message calls answered 429"
    for bot in replicas.bots:
        assert "send budget: 30/s, shared by every replica (Redis)" in bot.log()
