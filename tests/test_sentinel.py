"""Redis that fails over (Sentinel promotes the replica): one master, one replica, three sentinels, real processes on loopback.

The master is killed under a steady conversation load (plus one LLM request per round through
the fallback engine, on fake providers); the stores keep answering (process-local while no
master is elected), then continue on the promoted replica with the conversations and fallback
state that were there, and what was written during the gap is written back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from luka_bot.core.config import load_settings
from luka_bot.services.conversations import Conversations
from luka_bot.services.state_stores import build_stores
from tests.conftest import http_error, wait_until
from tests.fakes.redis_sentinel import MASTER_NAME, SentinelCluster
from tests.fakes.redis_server import redis_server_available

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed")]

TOKEN = "777:sentinel-test-token"
BOT, LLM = "luka:777:", "llm:777:"


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with SentinelCluster() as cluster:
        yield cluster


async def test_the_master_dies_under_load_and_the_stores_carry_on_on_the_promoted_replica(cluster: SentinelCluster,
                                                                                          make_env):
    settings = load_settings(_env_file=None, BOT_TOKEN=TOKEN, REDIS_SENTINELS=cluster.sentinels_setting,
                             REDIS_SENTINEL_MASTER=MASTER_NAME, REDIS_SOCKET_TIMEOUT=0.3, REDIS_RETRY_INTERVAL=0.3)
    stores = build_stores(settings)
    conversations = Conversations(stores.bot, max_messages=200)
    users = [1, 2, 3]
    threads = {user: await conversations.start_thread(user) for user in users}
    engine = make_env(store=stores.fallback)  # the fallback engine on the same store
    engine.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await engine.ask() == "openai/g1"  # ollama's cooldown is now in Redis
    answers: list[str] = []
    written: dict[int, list[str]] = {user: [] for user in users}
    slowest = 0.0
    stop = asyncio.Event()
    between_rounds = asyncio.Lock()

    async def steady_load() -> None:  # each user: one turn and one read every ~30 ms
        i = 0
        while not stop.is_set():
            async with between_rounds:
                await one_round(i)
            i += 1
            await asyncio.sleep(0.03)

    async def one_round(i: int) -> None:
        nonlocal slowest
        for user in users:
            started = time.monotonic()
            await conversations.add_turn(user, threads[user], f"q{i}", f"a{i}")
            await conversations.history(user, threads[user])
            slowest = max(slowest, time.monotonic() - started)
            written[user] += [f"q{i}", f"a{i}"]
        answers.append(await engine.ask())

    host, port = cluster.master_address()
    old_master = Redis(host=host, port=port, decode_responses=True)
    load = asyncio.create_task(steady_load())
    try:
        await wait_until(lambda: len(written[1]) >= 10, rounds=500, interval=0.02)
        async with between_rounds:  # replication is asynchronous: kill once the replica has every write
            await old_master.execute_command("WAIT", 1, 2000)
            cluster.master.kill()
        await old_master.aclose()
        await wait_until(lambda: stores.kind == "degraded", rounds=500, interval=0.02)
        new_host, new_port = await asyncio.to_thread(cluster.wait_for_new_master)
        await wait_until(lambda: stores.kind == "redis", rounds=1000, interval=0.02)
        during_gap = len(written[1])
        await wait_until(lambda: len(written[1]) >= during_gap + 10, rounds=500, interval=0.02)
    finally:
        stop.set()
        await load

    assert (new_host, new_port) != (host, port)
    assert set(answers) == {"openai/g1"} and len(answers) > 20  # answered all along
    # Ollama's cooldown survived the Sentinel failover: on the promoted master it is still skipped.
    tried = engine.fakes.count("ollama")
    for _ in range(3):
        assert await engine.ask() == "openai/g1"
    assert engine.fakes.count("ollama") == tried
    assert (await engine.health("ollama"))["state"] == "cooling"
    assert slowest < 1.5, f"a conversation call took {slowest:.2f}s"
    assert stores.shared is not None and stores.shared.written_back > 0  # the load went on during the gap
    new_master = Redis(host=new_host, port=new_port, decode_responses=True)
    try:
        assert await new_master.get(f"{LLM}cooldown:ollama") is not None
        for user in users:
            stored = [json.loads(t)["text"] for t in
                      await new_master.lrange(f"{BOT}history:{user}:{threads[user]}", 0, -1)]
            assert stored == written[user]
            assert await new_master.get(f"{BOT}thread:current:{user}") == threads[user]
    finally:
        await new_master.aclose()
        await stores.close()
