"""The bot's stores on a real local redis-server: a burst through a small pool, and a paused Redis.

    python benchmarks/redis_store.py [--users 500] [--pool 8] [--pause 5] [--rate 5] [--json]

- ``burst``: N users write their first message at once through ``Conversations`` (thread,
  thread name, one turn) on a pool of ``--pool`` connections; then counts, straight from Redis,
  the users whose current-thread key and history are there, and whether the store ever left Redis;
- ``pause``: one user writes ``--rate`` turns/s; Redis is SIGSTOPped for ``--pause`` s meanwhile and
  resumed; counts the turns written during the pause that reached Redis, and duplicates.

No pytest needed (``tests/fakes/redis_server.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _common import ROOT  # noqa: F401 - puts the repository on sys.path
from redis.asyncio import Redis

from luka_bot.core.config import load_settings
from luka_bot.services.conversations import Conversations
from luka_bot.services.state_stores import build_stores
from tests.fakes.redis_server import RedisServer

TOKEN = "1000:benchmark-token"
PREFIX = "luka:1000:"


async def burst(url: str, users: int, pool: int) -> dict[str, object]:
    stores = build_stores(load_settings(_env_file=None, BOT_TOKEN=TOKEN, REDIS_URL=url, REDIS_MAX_CONNECTIONS=pool))
    conversations = Conversations(stores.bot)
    kinds: set[str] = set()

    async def first_message(user: int) -> None:
        await conversations.current_thread(user)
        thread = await conversations.start_thread(user)
        await conversations.name_thread(user, thread, f"topic {user}")
        await conversations.add_turn(user, thread, f"q{user}", f"a{user}")
        kinds.add(stores.kind)

    started = time.perf_counter()
    await asyncio.gather(*(first_message(user) for user in range(users)))
    elapsed = time.perf_counter() - started
    raw = Redis.from_url(url, decode_responses=True)
    threads = histories = 0
    for user in range(users):
        thread = await raw.get(f"{PREFIX}thread:current:{user}")
        threads += thread is not None
        histories += thread is not None and await raw.llen(f"{PREFIX}history:{user}:{thread}") == 2
    await raw.aclose()
    await stores.close()
    return {"scenario": "burst", "users": users, "pool": pool, "seconds": round(elapsed, 2),
            "threads_in_redis": threads, "histories_in_redis": histories, "store_kinds_seen": sorted(kinds)}


async def pause(server: RedisServer, seconds: float, rate: float) -> dict[str, object]:
    stores = build_stores(load_settings(_env_file=None, BOT_TOKEN=TOKEN, REDIS_URL=server.url,
                                        REDIS_RETRY_INTERVAL=1.0))
    conversations = Conversations(stores.bot, max_messages=200)
    thread = await conversations.start_thread(1)
    written: list[str] = []
    during: list[str] = []
    loop = asyncio.get_running_loop()
    paused_at = loop.time() + 1.0
    resumed_at = paused_at + seconds
    i = 0
    while loop.time() < resumed_at + 3.0:
        now = loop.time()
        if server.paused and now >= resumed_at:
            server.resume()
        elif not server.paused and paused_at <= now < resumed_at:
            server.pause()
        await conversations.add_turn(1, thread, f"q{i}", f"a{i}")
        written += [f"q{i}", f"a{i}"]
        if server.paused:
            during += [f"q{i}", f"a{i}"]
        i += 1
        await asyncio.sleep(1 / rate)
    raw = Redis.from_url(server.url, decode_responses=True)
    stored = [json.loads(t)["text"] for t in await raw.lrange(f"{PREFIX}history:1:{thread}", 0, -1)]
    await raw.aclose()
    await stores.close()
    return {"scenario": "pause", "pause_s": seconds, "turns_per_s": rate * 2, "turns_written": len(written),
            "turns_written_during_pause": len(during), "of_those_in_redis": sum(t in stored for t in during),
            "duplicates": len(stored) - len(set(stored)), "redis_matches_written_order": stored == written}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--pause", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=5.0, help="messages (2 turns each) per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with RedisServer() as server:
        results = [await burst(server.url, args.users, args.pool)]
        server.flushall()
        results.append(await pause(server, args.pause, args.rate))
    for result in results:
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    asyncio.run(main())
