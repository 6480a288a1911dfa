#!/usr/bin/env python
"""Which rate-limit library holds the send budget: pyrate-limiter (GCRA) against limits (windows), on Redis.

The pacer needs, per send, one atomic step on a shared Redis that either spends a token or says
how long until one is there, for one or two rates at once (a chat's 1/s and a group's 20/min).
Measured side by side on one local redis-server, redis-py's asyncio client for every arm:

- cost of one admitted step and of one refused step, including what it takes to learn the wait
  (pyrate's GCRA returns it from the same script; limits needs `get_window_stats` after a refusal);
- the shape: `--senders` sends wanting to go at once, granted one by one (wait what the limiter
  says, ask again: the pacer's granter) at `--rate`/s; printed: the largest number of sends in
  any 100 ms (Telegram-like token bucket of that rate and `--burst`: burst + rate × 0.1), and the
  time until the last one.

    python benchmarks/send_budget.py            # 2000 steps per arm, 300 senders at 100/s (burst 20)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RedisProcess  # noqa: E402

import redis.asyncio as aioredis  # noqa: E402
from limits import RateLimitItemPerSecond  # noqa: E402
from limits.aio.storage import RedisStorage  # noqa: E402
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter  # noqa: E402
from pyrate_limiter import GCRA, Duration, Rate  # noqa: E402
from pyrate_limiter.buckets.redis_state import RedisStateStore  # noqa: E402

Take = Callable[[str], Awaitable[float]]
"""Spend one token of a key: 0.0, or the seconds until one is there (nothing spent)."""


def pyrate_gcra(client: aioredis.Redis, rate: float, burst: int) -> Take:
    algorithm, rates, stores = GCRA(), [Rate(int(rate), Duration.SECOND, burst=burst)], {}

    async def take(key: str) -> float:
        store = stores.setdefault(key, RedisStateStore(client, f"bench:gcra:{key}"))
        decision = await store.check(algorithm, rates, int(time.time() * 1000), 1)
        return 0.0 if decision.allowed else (decision.retry_after_ms or 1) / 1000

    return take


def limits_window(url: str, rate: float, kind: type) -> Take:
    storage = RedisStorage(url.replace("redis://", "async+redis://"), implementation="redispy")
    limiter, item = kind(storage), RateLimitItemPerSecond(int(rate))

    async def take(key: str) -> float:
        if await limiter.hit(item, key):
            return 0.0
        stats = await limiter.get_window_stats(item, key)  # the wait needs a second round trip
        return max(stats.reset_time - time.time(), 0.001)

    return take


async def step_costs(take: Take, steps: int) -> tuple[float, float]:
    """Median µs of an admitted step (a fresh key each time) and of a refused one (an empty bucket)."""
    admitted, refused = [], []
    for i in range(steps):
        started = time.perf_counter()
        await take(f"fresh{i}")
        admitted.append(time.perf_counter() - started)
    while await take("empty") == 0:
        pass
    for _ in range(steps):
        started = time.perf_counter()
        await take("empty")
        refused.append(time.perf_counter() - started)
    return statistics.median(admitted) * 1e6, statistics.median(refused) * 1e6


async def shape(take: Take, sends: int) -> tuple[int, float]:
    """`sends` sends wanting to go at once, granted one by one as the pacer's granter does (wait what the
    limiter says, ask again): the largest number in any 100 ms, and seconds until the last one."""
    sent: list[float] = []
    started = time.monotonic()
    while len(sent) < sends:
        if wait := await take("shape"):
            await asyncio.sleep(wait)
        else:
            sent.append(time.monotonic())
    window = max(sum(1 for t in sent[i:] if t - start < 0.1) for i, start in enumerate(sent))
    return window, sent[-1] - started


async def main(args: argparse.Namespace) -> None:
    server = RedisProcess().start()
    client = aioredis.Redis.from_url(server.url)
    arms = {
        "pyrate-limiter 4 GCRA (chosen)": pyrate_gcra(client, args.rate, args.burst),
        "limits 5 moving window": limits_window(server.url, args.rate, MovingWindowRateLimiter),
        "limits 5 sliding window counter": limits_window(server.url, args.rate, SlidingWindowCounterRateLimiter),
    }
    print(f"| library | admitted step µs | refused step + wait µs | max sends in 100 ms ({args.senders} senders, "
          f"{args.rate:g}/s; token bucket: {args.burst + args.rate * 0.1:g}) | all sent after |")
    print("|---|---:|---:|---:|---:|")
    try:
        for name, take in arms.items():
            await client.flushall()
            admitted, refused = await step_costs(take, args.steps)
            await client.flushall()
            window, total = await shape(take, args.senders)
            print(f"| {name} | {admitted:.0f} | {refused:.0f} | {window} | {total:.2f} s |")
    finally:
        await client.aclose()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--burst", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
