"""Where provider health lives: Redis (shared by every bot process) or process memory.

One small interface, `StateStore`, with three implementations:

- `MemoryStateStore`: the embedded default when no Redis is configured (one process);
- `RedisStateStore`: namespaced keys, TTLs in milliseconds, every write one atomic command
  or script, short socket timeouts so a hung Redis never stalls a chat;
- `FailsafeStore`: Redis first; when Redis stops answering it serves from process memory,
  logs that once, and goes back to Redis when it answers again.

The store keeps strings; what they mean is the engine's business (`engine.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")


class StateStore(Protocol):
    """Key/value state with expiry, plus bounded lists (conversation history)."""

    @property
    def kind(self) -> str:
        """`redis`, `memory` or `degraded` (Redis configured but not answering)."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[str | None]: ...

    async def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        """Store `value` for `ttl` seconds; with `only_if_absent`, only when the key is free."""
        ...

    async def replace_if_equal(self, key: str, expected: str, value: str, ttl: float) -> bool:
        """Store `value` for `ttl` seconds only while `key` still holds `expected` (compare-and-set)."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def delete_if_equal(self, key: str, value: str) -> bool:
        """Delete `key` only while it still holds `value` (compare-and-delete)."""
        ...

    async def clear(self, pattern: str = "*") -> int:
        """Delete every key of this store's namespace matching `pattern`."""
        ...

    async def push_bounded(self, key: str, value: str, *, max_len: int, ttl: float) -> None:
        """Append to a list, keep its last `max_len` items, expire it `ttl` s after the last push."""
        ...

    async def get_list(self, key: str) -> list[str]: ...

    async def close(self) -> None: ...


class MemoryStateStore:
    """Process-local store; expiry follows the injected clock, so tests never sleep."""

    kind = "memory"

    def __init__(self, clock: Clock = time.time):
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._lists: dict[str, tuple[deque[str], float]] = {}

    def _live(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._values[key]
            return None
        return item[0]

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return [self._live(key) for key in keys]

    async def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        if only_if_absent and self._live(key) is not None:
            return False
        self._values[key] = (value, self._clock() + ttl)
        return True

    async def replace_if_equal(self, key: str, expected: str, value: str, ttl: float) -> bool:
        if self._live(key) != expected:
            return False
        self._values[key] = (value, self._clock() + ttl)
        return True

    async def delete(self, *keys: str) -> int:
        return sum(
            (self._values.pop(key, None) is not None) + (self._lists.pop(key, None) is not None) for key in keys
        )

    async def delete_if_equal(self, key: str, value: str) -> bool:
        if self._live(key) == value:
            del self._values[key]
            return True
        return False

    async def clear(self, pattern: str = "*") -> int:
        from fnmatch import fnmatchcase

        doomed = [key for key in [*self._values, *self._lists] if fnmatchcase(key, pattern)]
        return await self.delete(*doomed)

    async def push_bounded(self, key: str, value: str, *, max_len: int, ttl: float) -> None:
        items = self._list(key)
        items.append(value)
        while len(items) > max_len:
            items.popleft()
        self._lists[key] = (items, self._clock() + ttl)

    async def get_list(self, key: str) -> list[str]:
        return list(self._list(key))

    def _list(self, key: str) -> deque[str]:
        item = self._lists.get(key)
        if item is None or item[1] <= self._clock():
            return deque()
        return item[0]

    async def close(self) -> None:
        return None


_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_REPLACE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStateStore:
    """Shared store on Redis: keys under `prefix`, TTLs in ms, atomic writes, no client retries.

    A failed command raises `redis.exceptions.RedisError` / `OSError` at once (no retry loop,
    short timeouts); `FailsafeStore` decides what to do about it.
    """

    kind = "redis"

    def __init__(self, client: Redis, *, prefix: str = "llm:"):
        self.client = client
        self.prefix = prefix
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._replace_if_equal = client.register_script(_REPLACE_IF_EQUAL)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "llm:", timeout: float = 0.5) -> RedisStateStore:
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, prefix=prefix)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return list(await self.client.mget([self._k(k) for k in keys]))

    async def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        return bool(await self.client.set(self._k(key), value, px=_ms(ttl), nx=only_if_absent))

    async def replace_if_equal(self, key: str, expected: str, value: str, ttl: float) -> bool:
        return bool(await self._replace_if_equal(keys=[self._k(key)], args=[expected, value, _ms(ttl)]))

    async def delete(self, *keys: str) -> int:
        return int(await self.client.delete(*[self._k(k) for k in keys])) if keys else 0

    async def delete_if_equal(self, key: str, value: str) -> bool:
        return bool(await self._delete_if_equal(keys=[self._k(key)], args=[value]))

    async def clear(self, pattern: str = "*") -> int:
        doomed = [key async for key in self.client.scan_iter(match=self._k(pattern), count=500)]
        return int(await self.client.delete(*doomed)) if doomed else 0

    async def push_bounded(self, key: str, value: str, *, max_len: int, ttl: float) -> None:
        full = self._k(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(full, value).ltrim(full, -max_len, -1).pexpire(full, _ms(ttl))
            await pipe.execute()

    async def get_list(self, key: str) -> list[str]:
        return list(await self.client.lrange(self._k(key), 0, -1))

    async def close(self) -> None:
        await self.client.aclose()


STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


class FailsafeStore:
    """Redis, with process memory standing in while Redis does not answer.

    An LLM call never fails because Redis did: each operation that fails on Redis is served by
    the local store, Redis is left alone for `retry_interval` seconds, then tried again.
    What was learned locally during the outage stays local (it expires on its own); deletions
    made during the outage are replayed on Redis when it answers again.
    """

    def __init__(
        self,
        redis: RedisStateStore,
        local: MemoryStateStore | None = None,
        *,
        retry_interval: float = 5.0,
        monotonic: Clock = time.monotonic,
    ):
        self.redis = redis
        self.local = local or MemoryStateStore()
        self.retry_interval = retry_interval
        self._monotonic = monotonic
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._missed_deletions: list[Callable[[], Awaitable[object]]] = []

    @property
    def kind(self) -> str:
        return "redis" if self._down_since is None else "degraded"

    async def _run(self, name: str, redis_call: Callable[[], Awaitable[T]], local_call: Callable[[], Awaitable[T]]) -> T:
        if self._down_since is not None and self._monotonic() < self._retry_at:
            return await local_call()
        try:
            if self._down_since is not None:
                await self._replay_deletions()
            result = await redis_call()
        except STORE_ERRORS as error:
            now = self._monotonic()
            if self._down_since is None:
                self._down_since = now
                logger.error(
                    "❌ Redis state store unavailable (%s: %s); serving from process-local state", name, error
                )
            self._retry_at = now + self.retry_interval
            return await local_call()
        if self._down_since is not None:
            logger.warning(
                "✅ Redis state store is back after %.1fs; shared state resumed", self._monotonic() - self._down_since
            )
            self._down_since = None
        return result

    async def _replay_deletions(self) -> None:
        """Deletions made while Redis was away (a /llm_clear, a recovery) must not come back."""
        while self._missed_deletions:
            await self._missed_deletions[0]()
            self._missed_deletions.pop(0)

    async def _delete_everywhere(self, name: str, local: T, redis_call: Callable[[], Awaitable[T]]) -> T:
        async def missed() -> T:
            self._missed_deletions.append(redis_call)
            return local

        return await self._run(name, redis_call, missed)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return await self._run("get", lambda: self.redis.get_many(keys), lambda: self.local.get_many(keys))

    async def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        return await self._run(
            "set",
            lambda: self.redis.set(key, value, ttl, only_if_absent=only_if_absent),
            lambda: self.local.set(key, value, ttl, only_if_absent=only_if_absent),
        )

    async def replace_if_equal(self, key: str, expected: str, value: str, ttl: float) -> bool:
        return await self._run(
            "set",
            lambda: self.redis.replace_if_equal(key, expected, value, ttl),
            lambda: self.local.replace_if_equal(key, expected, value, ttl),
        )

    async def delete(self, *keys: str) -> int:
        # Deletions go to both: a force or cooldown cleared during an outage must not come back.
        local = await self.local.delete(*keys)
        return await self._delete_everywhere("delete", local, lambda: self.redis.delete(*keys))

    async def delete_if_equal(self, key: str, value: str) -> bool:
        local = await self.local.delete_if_equal(key, value)
        return await self._delete_everywhere("delete", local, lambda: self.redis.delete_if_equal(key, value))

    async def clear(self, pattern: str = "*") -> int:
        local = await self.local.clear(pattern)
        return await self._delete_everywhere("clear", local, lambda: self.redis.clear(pattern))

    async def push_bounded(self, key: str, value: str, *, max_len: int, ttl: float) -> None:
        await self._run(
            "push",
            lambda: self.redis.push_bounded(key, value, max_len=max_len, ttl=ttl),
            lambda: self.local.push_bounded(key, value, max_len=max_len, ttl=ttl),
        )

    async def get_list(self, key: str) -> list[str]:
        return await self._run("lrange", lambda: self.redis.get_list(key), lambda: self.local.get_list(key))

    async def close(self) -> None:
        await self.redis.close()


def build_store(redis_url: str | None, *, prefix: str = "llm:", clock: Clock = time.time) -> StateStore:
    """The store for a deployment: failsafe Redis when a URL is given, else process memory."""
    if redis_url:
        return FailsafeStore(RedisStateStore.from_url(redis_url, prefix=prefix))
    return MemoryStateStore(clock)
