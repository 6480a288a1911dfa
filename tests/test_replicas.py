"""Two webhook replicas on one Redis behave as one bot.

Two real bot processes (`python -m luka_bot`, webhook mode, each on its own port, the same
token and secret) share one real redis-server, one fake Bot API and two fake LLM servers
(ollama = primary, openai = fallback). The test plays Telegram: it posts each update, signed
with the secret, alternately to replica 0 and replica 1. The tests are one story, in file order.
Each replica serves `/metrics` on its webhook port (METRICS_PORT == WEBHOOK_PORT); the story reads
the provider state there instead of sleeping through cooldowns, and counts the updates handled.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import wait_until
from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, scrape_metrics, stop_all
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer, free_port, redis_server_available
from tests.test_e2e_streaming import STOPPED_EN, PacedLLM

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
    pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed"),
]

TOKEN = "123456:REPLICAS-token-not-real-abcdef"
SECRET = "replicas-SECRET-0123456789"
OPENAI_KEY = "sk-test-replicas-SECRET-987654"
ADMIN = 7001
USERS = list(range(7101, 7109))
COOLDOWN = 3
PROBE_INTERVAL = 1  # background recovery probes, scaled to the 3 s cooldown as in the outage drill
WAIT = 20.0
RATE_LIMIT, RATE_BURST = 20, 5  # per user: 20 messages per 10 s, 5 at once; the story's users stay below


@dataclass
class Replicas:
    fake: FakeTelegram
    primary: FakeLLM
    fallback: FakeLLM
    ports: list[int]
    bots: list[BotProcess]
    http: aiohttp.ClientSession
    update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    turn: itertools.count = field(default_factory=itertools.count)

    async def post(self, text: str, user_id: int, replica: int | None = None) -> dict:
        """Deliver one private message to `replica` (default: alternately), signed like Telegram."""
        replica = next(self.turn) % 2 if replica is None else replica
        message = self.fake.send_message(text, user_id=user_id)
        await self.deliver({"message": message}, replica)
        return message

    async def deliver(self, update: dict, replica: int) -> None:
        """POST one update (without its id) to `replica`'s webhook, signed with the secret."""
        url = f"http://127.0.0.1:{self.ports[replica]}/webhook"
        update = {"update_id": next(self.update_ids), **update}
        async with self.http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
            assert r.status == 200, await r.text()

    async def reply(self, user_id: int, match: Callable[[str], bool], *, after: int) -> Call:
        return await says(self.fake, user_id, match, after=after, timeout=WAIT, log=self.log_tails)

    async def ask(self, text: str, user_id: int, replica: int) -> str:
        """Send and return the bot's answer (the message after any thread name)."""
        mark = self.fake.mark()
        await self.post(text, user_id, replica)
        call = await self.reply(user_id, lambda t: not t.startswith("🧵"), after=mark)
        return call.params["text"]

    async def burst(self, users: list[int], text: str) -> list[str]:
        """Every user writes at once, alternately to each replica; the answers, in user order."""
        mark = self.fake.mark()
        await asyncio.gather(*(self.post(f"{text} #{u}", u) for u in users))
        calls = [await self.reply(u, lambda t: not t.startswith("🧵"), after=mark) for u in users]
        return [c.params["text"] for c in calls]

    def admin_texts(self, prefix: str) -> list[str]:
        return [c.params["text"] for c in self.fake.calls_of("sendMessage")
                if c.ok and c.params.get("chat_id") == ADMIN and c.params["text"].startswith(prefix)]

    async def metrics(self, replica: int = 0) -> dict[str, float]:
        return await scrape_metrics(f"http://127.0.0.1:{self.ports[replica]}/metrics", self.http)

    async def wait_state(self, provider: str, state: str) -> None:
        """Until replica 0's /metrics says `provider` is in `state` (a cooldown running out, say)."""
        key = f"llm_provider_state{{'provider': '{provider}', 'state': '{state}'}}"
        for _ in range(int(WAIT / 0.1)):
            if (await self.metrics()).get(key) == 1:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{provider} never became {state}\n{self.log_tails()}")

    def log_tails(self) -> str:
        return "\n".join(f"--- replica {i} log (tail) ---\n{bot.log_tail(2500)}" for i, bot in enumerate(self.bots))


def replica_env(fake: FakeTelegram, primary: FakeLLM, fallback: FakeLLM, redis_url: str, port: int,
                metrics: bool) -> dict[str, str]:
    env = bot_env(fake, primary, fallback, redis_url=redis_url, admin=ADMIN, openai_key=OPENAI_KEY,
                  OLLAMA_TIMEOUT=5, OPENAI_TIMEOUT=5, LLM_CONNECT_TIMEOUT=1, LLM_FAILURE_COOLDOWN=COOLDOWN,
                  LLM_RECOVERY_PROBE_INTERVAL=PROBE_INTERVAL, WEBHOOK_URL=f"http://127.0.0.1:{port}", WEBHOOK_HOST="127.0.0.1", WEBHOOK_PORT=port,
                  WEBHOOK_SECRET=SECRET, USER_RATE_LIMIT=RATE_LIMIT, USER_RATE_WINDOW=10, USER_RATE_BURST=RATE_BURST,
                  # two replicas and a burst on one loaded host: a Redis reply a little late must not make a
                  # replica fall back to process-local state (and per-replica limits) mid-story
                  REDIS_SOCKET_TIMEOUT=3)
    if metrics:
        env.update(METRICS_PORT=str(port), METRICS_HOST="127.0.0.1")
    return env


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    empty_redis(redis_server)
    workdir = tmp_path_factory.mktemp("replicas")
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    primary = PacedLLM("ollama", latency=0.05)
    primary.pace = 0.0  # streams as fast as a FakeLLM; the Stop test holds it mid-stream
    await primary.start()
    fallback = await FakeLLM("openai", latency=0.05).start()
    http = aiohttp.ClientSession()
    ports = [free_port(), free_port()]
    bots = [await BotProcess.start(replica_env(fake, primary, fallback, redis_server.url, port, metrics=True),
                                   workdir, log_name=f"replica{i}.log") for i, port in enumerate(ports)]
    replicas = Replicas(fake, primary, fallback, ports, bots, http)
    try:
        for port, bot in zip(ports, bots, strict=True):
            # two cold starts share 2 cores with everything else
            await bot.wait_listening(f"http://127.0.0.1:{port}/webhook", timeout=120, name="a replica")
        await wait_until(lambda: len(fake.calls_of("setWebhook")) == 2, rounds=400, interval=0.05)
        yield replicas
    finally:
        await asyncio.gather(*(bot.stop(grace=15) for bot in bots))
        await http.close()
        await stop_all(primary, fallback, fake)
    for i, bot in enumerate(bots):
        log = bot.log()
        assert "Traceback" not in log, f"replica {i}:\n{log[-3000:]}"
        assert TOKEN not in log and SECRET not in log and OPENAI_KEY not in log


def _is_probe(request: dict) -> bool:
    """A background check's request: one token, for the check's fixed prompt."""
    return request.get("max_tokens") == 1 or request.get("max_completion_tokens") == 1


# --- the story -------------------------------------------------------------------------------------------


async def test_a_conversation_continues_on_the_other_replica(bot: Replicas) -> None:
    user = USERS[0]
    assert await bot.ask("my name is Ann", user, replica=0) == "answer from ollama"
    bot.primary.reset_counts()
    assert await bot.ask("what is my name?", user, replica=1) == "answer from ollama"
    (request,) = [r for r in bot.primary.requests if "what is my name?" in str(r["messages"][-1])]
    history = [(m["role"], m.get("content")) for m in request["messages"]]
    assert ("user", "my name is Ann") in history and ("assistant", "answer from ollama") in history, history


async def test_force_and_clear_sent_to_one_replica_apply_to_the_other(bot: Replicas) -> None:
    user = USERS[0]
    forced = await bot.ask("/llm_force openai 600", ADMIN, replica=0)
    assert forced.startswith("✅ openai forced"), forced
    assert await bot.ask("who answers now?", user, replica=1) == "answer from openai"
    cleared = await bot.ask("/llm_clear", ADMIN, replica=1)
    assert cleared.startswith("🧹 Cleared."), cleared
    assert await bot.ask("and now?", user, replica=0) == "answer from ollama"


async def test_the_primary_dying_under_load_is_learned_once_and_skipped_by_both(bot: Replicas) -> None:
    assert await bot.burst(USERS, "hello") == ["answer from ollama"] * len(USERS)  # every thread exists now
    bot.primary.set_mode("http500")
    bot.primary.reset_counts()
    bot.fallback.reset_counts()

    # dies during a burst: only the requests already on their way reach it
    assert await bot.burst(USERS, "are you there") == ["answer from openai"] * len(USERS)
    died_in_flight = bot.primary.count()
    assert 1 <= died_in_flight <= len(USERS)
    # learned by one replica, skipped by both for the cooldown
    assert await bot.burst(USERS, "still there") == ["answer from openai"] * len(USERS)
    assert [r for r in bot.primary.requests[died_in_flight:] if not _is_probe(r)] == []  # probes only
    await wait_until(lambda: len(bot.admin_texts("🔴")) >= 1, rounds=200, interval=0.05)
    assert len(bot.admin_texts("🔴 LLM provider ollama is down")) == 1  # one alert, not one per replica

    # past the cooldown, the primary still broken: only the background probes reach it, one process probing
    started = time.monotonic()
    await asyncio.sleep(COOLDOWN + 2 * PROBE_INTERVAL)
    assert await bot.burst(USERS, "after the cooldown") == ["answer from openai"] * len(USERS)
    users_after = [r for r in bot.primary.requests[died_in_flight:] if not _is_probe(r)]
    probes = [r for r in bot.primary.requests if _is_probe(r)]
    assert users_after == [], "no user request reaches a primary the probes cover"
    assert 1 <= len(probes) <= (time.monotonic() - started) / PROBE_INTERVAL + 2, len(probes)
    print(f"\nrequests reaching the dead primary: {died_in_flight} in flight when it died, then only "
          f"{len(probes)} background probes in {time.monotonic() - started:.1f}s across both replicas")


async def test_recovery_is_seen_by_both_replicas(bot: Replicas) -> None:
    bot.primary.set_mode("ok")
    back = time.monotonic()
    await bot.wait_state("ollama", "healthy")  # a background probe found it, before any user request
    assert time.monotonic() - back < 3 * PROBE_INTERVAL + 2
    answers = await bot.burst(USERS, "better now?")
    assert answers == ["answer from ollama"] * len(USERS)
    for replica in (0, 1):
        assert await bot.ask(f"on replica {replica}", USERS[replica], replica=replica) == "answer from ollama"
    await wait_until(lambda: len(bot.admin_texts("🟢")) >= 1, rounds=200, interval=0.05)
    assert bot.admin_texts("🟢") == ["🟢 LLM provider ollama is back and serving again."]
    scraped = await bot.metrics()
    assert scraped["llm_provider_state{'provider': 'ollama', 'state': 'healthy'}"] == 1
    assert scraped["bot_updates_total{'type': 'message'}"] >= len(USERS) * 2  # replica 0 took half of them


async def test_stop_pressed_on_the_other_replica_stops_the_reply(bot: Replicas) -> None:
    """The reply streams from replica 0; Telegram delivers the Stop to replica 1 (a load balancer
    does not know who is generating): the reply stops, keeps its partial text, blames nobody."""
    user = USERS[2]
    fallback_before = bot.fallback.count()
    hold = bot.primary.hold = asyncio.Event()
    try:
        mark = bot.fake.mark()
        question = await bot.post("Write me a long poem", user, replica=0)
        first = await bot.fake.wait_for("sendMessageDraft", lambda c: c.ok and c.params.get("chat_id") == user,
                                        timeout=WAIT, after=mark)
        chat = {"id": user, "type": "private", "first_name": "User"}
        await bot.deliver({"stopped_message_generation": {"chat": chat, "draft_id": question["message_id"]}},
                          replica=1)
        stopped = await bot.reply(user, lambda t: t.endswith(STOPPED_EN), after=mark)
    finally:
        hold.set()
        bot.primary.hold = None
    assert stopped.params["text"].startswith(first.params["text"].rstrip())
    assert bot.fallback.count() == fallback_before, "a Stop is not a failure: nothing falls back"
    scraped = await bot.metrics()
    assert scraped["llm_provider_state{'provider': 'ollama', 'state': 'healthy'}"] == 1


async def test_two_replicas_share_each_users_rate_limit(bot: Replicas) -> None:
    """One user's 40 messages at once, alternately to each replica: the bot answers the burst the
    limit allows once for the whole bot (USER_RATE_BURST), not once per replica, with one notice."""
    spammer, messages = 7201, 40

    async def handled() -> float:
        return sum([(await bot.metrics(replica)).get("bot_update_seconds_count{}", 0) for replica in (0, 1)])

    before = await handled()
    mark = bot.fake.mark()
    await asyncio.gather(*(bot.post(f"spam {i}", spammer) for i in range(messages)))

    def sent() -> list[str]:
        return [c.params["text"] for c in bot.fake.calls[mark:]
                if c.method == "sendMessage" and c.ok and c.params.get("chat_id") == spammer]

    def answers() -> list[str]:
        return [t for t in sent() if t.startswith("answer from")]

    # Telegram dates messages to the second: a burst across a second boundary may find 2 more tokens
    for _ in range(int(WAIT / 0.05)):
        assert len(answers()) <= RATE_BURST + 2, f"{len(answers())} answers to one user's burst (and counting)"
        if await handled() >= before + messages:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"not all {messages} messages were handled\n{bot.log_tails()}")
    assert len(answers()) >= RATE_BURST, sent()
    notices = [t for t in sent() if t.startswith("⏳")]
    assert notices == ["⏳ Too many messages: I skipped this one. Write again in 1s."], notices
    throttled = [(await bot.metrics(r)).get("bot_throttled_total{'reason': 'rate'}", 0) for r in (0, 1)]
    assert sum(throttled) == messages - len(answers()) and all(throttled), throttled
