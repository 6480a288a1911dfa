"""Token buckets by key (pyrate-limiter's GCRA), in Redis for every replica or in this process.

The send pacer's budget and the per-user limits both spend from these. `take(key, rates, at)`
spends one token of `key`'s bucket at the time `at` (default: now) if every rate in `rates` has
one (several rates share one key, so one atomic step checks them all) and returns 0.0;
otherwise it takes nothing and returns the seconds until it could. It never waits itself. With
Redis (`share()`) every replica spends from the same buckets, under the bot's key prefix: one
small hash per key that expires by itself once refilled. While Redis does not answer (or
without it) each process spends from buckets of its own: the rates then hold per process,
nothing stops for want of Redis, and nothing needs writing back (a bucket refills by itself).
"""

from __future__ import annotations

import time
from datetime import datetime

from pyrate_limiter import GCRA, Rate
from pyrate_limiter.abstracts.algorithm import Decision
from pyrate_limiter.buckets.redis_state import RedisStateStore
from pyrate_limiter.buckets.state_bucket import InMemoryStateStore

from plugins.llm_fallback import SharedRedis
from plugins.llm_fallback.stores import Clock

PRUNE_ABOVE = 1000
"""Buckets this process keeps before it looks for unused ones to forget."""


def per_window(limit: int, window: float, burst: int) -> Rate:
    """`limit` tokens per `window` seconds, at most `burst` of them at once."""
    return Rate(limit, round(window * 1000), burst=burst)


class RateBuckets:
    """GCRA token buckets by key, shared through Redis while it answers (see module doc)."""

    def __init__(self, *, clock: Clock = time.time, forget_after: float = 120.0, name: str = "rate limit"):
        self.clock = clock
        self.forget_after = forget_after
        """An unused key's bucket is forgotten after this long: more than the slowest refill."""
        self.name = name
        """For the log line when Redis stops answering."""
        self.algorithm = GCRA()
        self.shared: SharedRedis | None = None
        self.prefix = ""
        self._local: dict[str, InMemoryStateStore] = {}
        self._remote: dict[str, RedisStateStore] = {}
        self._used: dict[str, float] = {}
        self._pruned_at = 0.0

    def share(self, shared: SharedRedis | None, prefix: str) -> None:
        """Spend from buckets in this Redis (every replica of the bot), keys under `prefix`."""
        self.shared = shared
        self.prefix = prefix
        self._remote.clear()

    @property
    def scope(self) -> str:
        """Who shares the buckets now: `bot` (every replica, through Redis) or `process`."""
        return "bot" if self.shared is not None and self.shared.kind == "redis" else "process"

    async def take(self, key: str, rates: list[Rate], at: datetime | None = None) -> float:
        """Spend one token of `key` at `at` (default: now) → 0.0, or nothing → seconds until one is there."""
        now = self.clock()
        self._used[key] = now
        if len(self._used) > PRUNE_ABOVE and now - self._pruned_at > self.forget_after:
            self._prune(now)
        at_ms = int((at.timestamp() if at is not None else now) * 1000)
        if self.shared is None:
            decision = self._local_store(key).check(self.algorithm, rates, at_ms, 1)
        else:
            remote = self._remote_store(key)

            async def in_redis() -> Decision:
                return await remote.check(self.algorithm, rates, at_ms, 1)  # type: ignore[misc]

            async def here() -> Decision:
                return self._local_store(key).check(self.algorithm, rates, at_ms, 1)

            decision = await self.shared.run(self.name, in_redis, here)
        if decision.allowed:
            return 0.0
        return max(decision.retry_after_ms or 1, 1) / 1000

    def _local_store(self, key: str) -> InMemoryStateStore:
        store = self._local.get(key)
        if store is None:
            store = self._local[key] = InMemoryStateStore()
        return store

    def _remote_store(self, key: str) -> RedisStateStore:
        store = self._remote.get(key)
        if store is None:
            assert self.shared is not None
            store = self._remote[key] = RedisStateStore(self.shared.client, f"{self.prefix}{key}")
        return store

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for key in [k for k, used in self._used.items() if now - used > self.forget_after]:
            del self._used[key]
            self._local.pop(key, None)
            self._remote.pop(key, None)
