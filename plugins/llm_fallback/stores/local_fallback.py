"""The plugin's store on Redis, with process memory standing in while Redis does not answer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .base import Clock
from .memory import MemoryStateStore
from .redis import RedisStateStore
from .shared import DEFAULT_RETRY_INTERVAL, SharedRedis

SEEN_LIMIT = 10_000


@dataclass
class _Add:
    """An increment counted while Redis was away: added to Redis's total when it returns (at most once more
    if that write's outcome is unknown: a budget then errs on the side of spending)."""

    redis: RedisStateStore
    key: str
    amount: int
    ttl: float

    async def apply(self) -> None:
        await self.redis.add(self.key, self.amount, self.ttl)


@dataclass
class _CompareAndDelete:
    """A deletion made while Redis was away: delete each key only if it still holds what we saw."""

    redis: RedisStateStore
    seen: dict[str, str]

    async def apply(self) -> None:
        for key, value in self.seen.items():
            await self.redis.delete_if_equal(key, value)


class RedisWithLocalFallback:
    """Redis, with process memory standing in while Redis does not answer (see `stores` docs).

    While Redis is away, what the engine learns (cooldowns, probes, last errors) lives in process
    memory and is forgotten when Redis returns — it is not written back. Deletions made meanwhile
    (`/llm_clear`, a recovery, a released probe) are written back as compare-and-delete of the value
    this process last saw in Redis for that key, so they never remove what another process wrote
    in the meantime; a key whose Redis value this process never saw is left alone.
    """

    def __init__(
        self,
        redis: RedisStateStore,
        local: MemoryStateStore | None = None,
        *,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        monotonic: Clock = time.monotonic,
        shared: SharedRedis | None = None,
    ):
        self.redis = redis
        self.local = local or MemoryStateStore()
        self.shared = shared or SharedRedis(redis.client, retry_interval=retry_interval, monotonic=monotonic)
        self.shared.attach(self.local.reset)
        self._seen: dict[str, str | None] = {}
        self._closed = False

    @property
    def kind(self) -> str:
        return self.shared.kind

    def _saw(self, key: str, value: str | None) -> None:
        self._seen.pop(key, None)
        self._seen[key] = value
        if len(self._seen) > SEEN_LIMIT:
            del self._seen[next(iter(self._seen))]

    def _last_seen(self, keys: Sequence[str]) -> dict[str, str]:
        return {key: value for key in keys if (value := self._seen.get(key)) is not None}

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        async def on_redis() -> list[str | None]:
            values = await self.redis.get_many(keys)
            for key, value in zip(keys, values, strict=True):
                self._saw(key, value)
            return values

        return await self.shared.run("get", on_redis, lambda: self.local.get_many(keys))

    async def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        async def on_redis() -> bool:
            done = await self.redis.set(key, value, ttl, only_if_absent=only_if_absent)
            if done:
                self._saw(key, value)
            return done

        return await self.shared.run("set", on_redis,
                                     lambda: self.local.set(key, value, ttl, only_if_absent=only_if_absent))

    async def replace_if_equal(self, key: str, expected: str, value: str, ttl: float) -> bool:
        async def on_redis() -> bool:
            done = await self.redis.replace_if_equal(key, expected, value, ttl)
            if done:
                self._saw(key, value)
            return done

        async def locally() -> bool:
            # Right after the switch the local store is empty: compare with what Redis held, so
            # the failure being recorded is not dropped.
            if self.local.holds(key) or self._seen.get(key) != expected:
                return await self.local.replace_if_equal(key, expected, value, ttl)
            return await self.local.set(key, value, ttl)

        return await self.shared.run("set", on_redis, locally)

    async def add(self, key: str, amount: int, ttl: float) -> int:
        async def locally() -> int:
            self.shared.defer(_Add(self.redis, key, amount, ttl))
            return await self.local.add(key, amount, ttl)

        return await self.shared.run("add", lambda: self.redis.add(key, amount, ttl), locally)

    async def delete(self, *keys: str) -> int:
        async def on_redis() -> int:
            count = await self.redis.delete(*keys)
            for key in keys:
                self._saw(key, None)
            return count

        async def locally() -> int:
            deleted = set()
            for key in keys:
                if await self.local.delete(key):
                    deleted.add(key)
            seen = self._last_seen(keys)
            if seen:
                self.shared.defer(_CompareAndDelete(self.redis, seen))
            return len(deleted | set(seen))

        return await self.shared.run("delete", on_redis, locally)

    async def delete_if_equal(self, key: str, value: str) -> bool:
        async def on_redis() -> bool:
            done = await self.redis.delete_if_equal(key, value)
            if done:
                self._saw(key, None)
            return done

        async def locally() -> bool:
            deleted = await self.local.delete_if_equal(key, value)
            if self._seen.get(key) == value:
                self.shared.defer(_CompareAndDelete(self.redis, {key: value}))
                return True
            return deleted

        return await self.shared.run("delete", on_redis, locally)

    async def clear(self, pattern: str = "*") -> int:
        async def on_redis() -> int:
            count = await self.redis.clear(pattern)
            for key in [key for key in self._seen if fnmatchcase(key, pattern)]:
                self._saw(key, None)
            return count

        async def locally() -> int:
            doomed = [key for key in self._seen if fnmatchcase(key, pattern)]
            locally_doomed = self.local.matching(pattern)
            for key in locally_doomed:
                await self.local.delete(key)
            seen = self._last_seen(doomed)
            if seen:
                self.shared.defer(_CompareAndDelete(self.redis, seen))
            return len(set(locally_doomed) | set(seen))

        return await self.shared.run("clear", on_redis, locally)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.shared.close()
