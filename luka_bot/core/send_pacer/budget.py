"""The send budget: token buckets (pyrate-limiter's GCRA), in Redis for the whole bot or in this process.

A bucket is one key: `all` (the bot's overall rate) or `chat:<id>` (one chat's rate and, for a
group, its per-minute rate too, both in the same key so one atomic step checks both). `take()`
spends one token if the bucket has one and otherwise says how long until it will; it never
waits itself. With Redis (`share()`) every replica spends from the same buckets, under the bot's
key prefix; while Redis does not answer (or without it) each process spends from its own buckets
at the full rate: sending never stops for want of Redis.

Spare sends (frames) see the same buckets with a burst of 1 (`spare=True`: the same rate and
the same stored state): one is admitted only while its buckets are full, i.e. it takes a token
that would otherwise overflow, never one an answer is about to need; otherwise it takes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyrate_limiter import GCRA, Duration, Rate
from pyrate_limiter.abstracts.algorithm import Decision
from pyrate_limiter.buckets.redis_state import RedisStateStore
from pyrate_limiter.buckets.state_bucket import InMemoryStateStore

from plugins.llm_fallback import SharedRedis

Clock = Callable[[], float]
ChatId = int | str

RESOLUTION = 1_000_000
"""Rates are kept as whole `per_second × RESOLUTION` per `RESOLUTION` s (GCRA wants integers)."""
IDLE_FORGET = 120.0
"""Seconds after which an unused chat's bucket is forgotten (long after it has refilled)."""


def _rate(per_second: float, burst: int) -> Rate:
    return Rate(max(1, round(per_second * RESOLUTION)), Duration.SECOND * RESOLUTION, burst=max(1, burst))


def is_group(chat: ChatId) -> bool:
    """Groups, supergroups and channels have negative ids (or an @username)."""
    return isinstance(chat, str) or chat < 0


@dataclass(frozen=True)
class Limits:
    per_second: float = 30.0
    """The whole bot, every chat together."""
    burst: int = 20
    chat_per_second: float = 1.0
    chat_burst: int = 3
    group_per_minute: float = 20.0

    def overall(self, *, spare: bool = False) -> list[Rate]:
        return [_rate(self.per_second, 1 if spare else self.burst)]

    def chat(self, chat: ChatId, *, spare: bool = False) -> list[Rate]:
        """The chat's rate, then (groups) its per-minute rate: always in this order (one state field each)."""
        burst = 1 if spare else self.chat_burst
        rates = [_rate(self.chat_per_second, burst)]
        if is_group(chat):
            rates.append(_rate(self.group_per_minute / 60, burst))
        return rates


class SendBudget:
    """Token buckets by key; `take()` spends one token or says how long until one is there."""

    def __init__(self, limits: Limits, *, clock: Clock = time.time):
        self.limits = limits
        self.clock = clock
        self.algorithm = GCRA()
        self.shared: SharedRedis | None = None
        self.prefix = ""
        self._local: dict[str, InMemoryStateStore] = {}
        self._remote: dict[str, RedisStateStore] = {}
        self._used: dict[str, float] = {}
        self._pruned_at = 0.0

    def share(self, shared: SharedRedis | None, prefix: str) -> None:
        """Spend from buckets in this Redis (every replica of the bot), under `prefix`."""
        self.shared = shared
        self.prefix = prefix
        self._remote.clear()

    @property
    def scope(self) -> str:
        """Who shares this budget: `bot` (every replica, through Redis) or `process`."""
        return "bot" if self.shared is not None and self.shared.kind == "redis" else "process"

    async def take(self, key: str, rates: list[Rate]) -> float:
        """Spend one token of `key` (0.0), or take nothing and return the seconds until one is there."""
        now = self.clock()
        self._used[key] = now
        if len(self._used) > 1000 and now - self._pruned_at > IDLE_FORGET:
            self._prune(now)
        now_ms = int(now * 1000)
        if self.shared is None:
            decision = self._local_store(key).check(self.algorithm, rates, now_ms, 1)
        else:
            remote = self._remote_store(key)

            async def in_redis() -> Decision:
                return await remote.check(self.algorithm, rates, now_ms, 1)  # type: ignore[misc]

            async def here() -> Decision:
                return self._local_store(key).check(self.algorithm, rates, now_ms, 1)

            decision = await self.shared.run("send budget", in_redis, here)
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
        for key in [k for k, used in self._used.items() if now - used > IDLE_FORGET]:
            del self._used[key]
            self._local.pop(key, None)
            self._remote.pop(key, None)
