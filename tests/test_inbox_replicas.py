"""No message lost to a killed replica: two webhook replicas, one SIGKILLed with replies in flight.

Two real bot processes (`python -m luka_bot`, webhook mode) share one redis-server, one FakeTelegram
and one `EchoLLM` (tests/test_inbox_polling.py: "answer to: <question>"; a question with "slow" in
it waits until the test releases it). The test plays Telegram and posts each update to the replica
it chooses. Replica 1 serves /metrics on its webhook port. Orphan bound: 5 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.bot_process import BotProcess, bot_env, log_tails, says, stop_all
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer, free_port, redis_server_available
from tests.test_inbox_polling import EchoLLM, answers

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
    pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed"),
]

TOKEN = "123456:INBOX-replicas-token-not-real"
SECRET = "inbox-replicas-SECRET-0123456789"
ORPHAN_AFTER = 5
PROMISE = 60.0
"""The survivor answers a killed replica's messages within this many seconds of the kill."""


@dataclass
class Replicas:
    fake: FakeTelegram
    llm: EchoLLM
    ports: list[int]
    bots: list[BotProcess]
    http: aiohttp.ClientSession
    update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def post(self, text: str, user_id: int, replica: int) -> dict:
        message = self.fake.send_message(text, user_id=user_id)
        await self.deliver({"update_id": next(self.update_ids), "message": message}, replica)
        return message

    async def deliver(self, update: dict, replica: int) -> None:
        url = f"http://127.0.0.1:{self.ports[replica]}/webhook"
        async with self.http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
            assert r.status == 200, await r.text()

    async def answer(self, user_id: int, question: str, timeout: float = 30.0) -> Call:
        return await says(self.fake, user_id, f"answer to: {question}", after=0, timeout=timeout, log=self.logs)

    async def metrics(self) -> dict[str, float]:
        async with self.http.get(f"http://127.0.0.1:{self.ports[1]}/metrics") as response:
            text = await response.text()
        return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}

    def logs(self) -> str:
        return log_tails(self.bots, "replica")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    server = RedisServer().start()
    fake = await FakeTelegram(token=TOKEN).start()
    llm = await EchoLLM().start()
    http = aiohttp.ClientSession()
    workdir = tmp_path_factory.mktemp("inbox_replicas")
    ports = [free_port(), free_port()]
    bots = []
    for i, port in enumerate(ports):
        env = bot_env(fake, llm, redis_url=server.url, OLLAMA_TIMEOUT=60, INBOX_ORPHAN_AFTER=ORPHAN_AFTER,
                      WEBHOOK_URL=f"http://127.0.0.1:{port}", WEBHOOK_HOST="127.0.0.1", WEBHOOK_PORT=port,
                      WEBHOOK_SECRET=SECRET, **({"METRICS_PORT": port, "METRICS_HOST": "127.0.0.1"} if i else {}))
        bots.append(await BotProcess.start(env, workdir, log_name=f"replica{i}.log"))
    world = Replicas(fake, llm, ports, bots, http)
    try:
        for port, bot in zip(ports, bots, strict=True):
            await bot.wait_listening(f"http://127.0.0.1:{port}/webhook", timeout=120, name="a replica")
        yield world
    finally:
        llm.release()
        await asyncio.gather(*(bot.stop(grace=15) for bot in bots))
        await http.close()
        await stop_all(llm, fake)
        server.stop()
    for i, bot in enumerate(bots):
        assert "Traceback" not in bot.log(), f"replica {i}:\n{bot.log_tail(3000)}"
        assert TOKEN not in bot.log() and SECRET not in bot.log()


async def test_the_same_update_delivered_twice_is_answered_once(replicas: Replicas) -> None:
    """Telegram sends a webhook update again when it got no 200 in time: possibly to the other replica."""
    user = 3001
    message = replicas.fake.send_message("hello once", user_id=user)
    update = {"update_id": next(replicas.update_ids), "message": message}
    await asyncio.gather(replicas.deliver(update, 0), replicas.deliver(update, 1))
    await replicas.answer(user, "hello once")
    await replicas.deliver(update, 1)  # and once more after the answer
    other = replicas.fake.send_message("and then", user_id=user)
    await replicas.deliver({"update_id": next(replicas.update_ids), "message": other}, 1)
    await replicas.answer(user, "and then")  # the chat's line: the duplicate, had it run, would be answered by now
    assert [c.params["text"] for c in answers(replicas.fake, user)] == ["answer to: hello once",
                                                                          "answer to: and then"]


async def test_a_killed_replicas_messages_are_answered_by_the_other_in_order(replicas: Replicas) -> None:
    users, ordered_user = list(range(3101, 3111)), 3201
    replicas.llm.hold()
    for user in users:
        await replicas.post("slow question", user, replica=0)
    await replicas.post("slow first", ordered_user, replica=0)
    await replicas.post("second", ordered_user, replica=1)  # waits for its first, held by replica 0
    for _ in range(600):
        if replicas.llm.waiting == len(users) + 1:
            break
        await asyncio.sleep(0.05)
    assert replicas.llm.waiting == len(users) + 1, replicas.logs()
    waiting = await replicas.metrics()
    assert waiting["bot_inbox_pending"] == len(users) + 2, waiting
    assert waiting["bot_inbox_oldest_seconds"] > 0

    await replicas.bots[0].stop()  # SIGKILL
    killed_at = time.time()
    replicas.llm.release()
    calls = [await replicas.answer(user, "slow question", timeout=PROMISE) for user in users]
    calls.append(await replicas.answer(ordered_user, "second", timeout=PROMISE))
    seconds = max(c.at for c in calls) - killed_at
    assert seconds < PROMISE
    assert all(len(answers(replicas.fake, user)) == 1 for user in users)
    assert [c.params["text"] for c in answers(replicas.fake, ordered_user)] == ["answer to: slow first",
                                                                                  "answer to: second"]
    after = await replicas.metrics()
    assert after["bot_inbox_claimed_total"] == len(users) + 1, after
    for _ in range(100):
        if (after := await replicas.metrics())["bot_inbox_pending"] == 0:
            break
        await asyncio.sleep(0.05)
    assert after["bot_inbox_pending"] == 0 and after["bot_inbox_oldest_seconds"] == 0, after
    print(f"\n2 webhook replicas, SIGKILL of the one with {len(users) + 1} replies in flight: "
          f"{len(users) + 1}/{len(users) + 1} answered by the other, the last {seconds:.1f}s after the kill "
          f"(orphan bound {ORPHAN_AFTER}s), 0 duplicates, the chat's order kept")
