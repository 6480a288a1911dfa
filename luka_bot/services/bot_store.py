"""The bot's own data — conversations, per-chat switches — in Redis or process memory.

It lives under the bot's prefix (`luka:<bot id>:` by default), apart from the fallback
plugin's state, so the plugin's `/llm_clear` never touches it. It shares the process's one
Redis pool and health (`plugins.llm_fallback.SharedRedis`) with the plugin's store.

While Redis does not answer, every write goes to process memory and is queued; when Redis
answers again the queued writes are written to Redis in the order they were made, each exactly
once (every write is idempotent: a set, a delete, a push that skips values already in the list,
so a write whose first attempt timed out but ran lands once), before any new read or write of
this process reaches Redis.
Reads meanwhile see what this process wrote since Redis went away (a user whose thread is in
Redis continues in a fresh thread; the old one stays in Redis). Past
`SharedRedis.max_pending` queued writes the oldest are dropped and the "back" line says how many.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from plugins.llm_fallback import MemoryStateStore, RedisStateStore, SharedRedis
from plugins.llm_fallback.stores import Clock


class BotStore(Protocol):
    """Key/value with expiry plus bounded lists: what the bot keeps."""

    @property
    def kind(self) -> str:
        """`redis`, `memory` or `degraded`."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[str | None]: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def push_bounded(self, key: str, *values: str, max_len: int, ttl: float) -> None:
        """Append those `values` not in the list yet, keep its last `max_len` items, expire it `ttl` s after.

        Values already in the list are not appended again: this makes a push that is written
        back twice (its first attempt timed out but ran) land once. Callers push unique values.
        """
        ...

    async def get_list(self, key: str) -> list[str]: ...

    async def close(self) -> None: ...


class MemoryBotStore:
    """Process-local bot data; expiry follows the injected clock."""

    kind = "memory"

    def __init__(self, clock: Clock = time.time):
        self._clock = clock
        self._values = MemoryStateStore(clock)
        self._lists: dict[str, tuple[deque[str], float]] = {}

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return await self._values.get_many(keys)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._values.set(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        await self._values.delete(*keys)
        for key in keys:
            self._lists.pop(key, None)

    async def push_bounded(self, key: str, *values: str, max_len: int, ttl: float) -> None:
        items = self._list(key)
        items.extend(value for value in values if value not in items)
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

    def reset(self) -> None:
        self._values.reset()
        self._lists.clear()

    async def close(self) -> None:
        return None


_PUSH_NEW = """
for i = 3, #ARGV do
  if not redis.call('LPOS', KEYS[1], ARGV[i]) then redis.call('RPUSH', KEYS[1], ARGV[i]) end
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisBotStore:
    """Bot data on Redis under `prefix`; a push is one script (append the new values, trim, expire)."""

    kind = "redis"

    def __init__(self, redis: RedisStateStore):
        self.values = redis
        self.client = redis.client
        self.prefix = redis.prefix
        self._push_new = self.client.register_script(_PUSH_NEW)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return await self.values.get_many(keys)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self.values.set(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        await self.values.delete(*keys)

    async def push_bounded(self, key: str, *values: str, max_len: int, ttl: float) -> None:
        await self._push_new(keys=[self._k(key)], args=[max_len, _ms(ttl), *values])

    async def get_list(self, key: str) -> list[str]:
        return list(await self.client.lrange(self._k(key), 0, -1))

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)


@dataclass
class _QueuedWrite:
    """One write made while Redis was away (each op is idempotent: applying it again changes nothing)."""

    store: RedisBotStore
    op: str
    key: str
    args: tuple[str, ...]
    max_len: int = 0
    ttl: float = 0.0

    async def apply(self) -> None:
        if self.op == "set":
            await self.store.set(self.key, self.args[0], self.ttl)
        elif self.op == "delete":
            await self.store.delete(self.key, *self.args)
        else:
            await self.store.push_bounded(self.key, *self.args, max_len=self.max_len, ttl=self.ttl)


class BotStoreWithLocalFallback:
    """Bot data on Redis; while Redis is away, in memory and queued to be written back (module doc)."""

    def __init__(self, redis: RedisBotStore, shared: SharedRedis, local: MemoryBotStore | None = None):
        self.redis = redis
        self.shared = shared
        self.local = local or MemoryBotStore()
        self.shared.attach(self.local.reset)
        self._closed = False

    @property
    def kind(self) -> str:
        return self.shared.kind

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return await self.shared.run("get", lambda: self.redis.get_many(keys), lambda: self.local.get_many(keys))

    async def set(self, key: str, value: str, ttl: float) -> None:
        async def locally() -> None:
            await self.local.set(key, value, ttl)
            self.shared.defer(_QueuedWrite(self.redis, "set", key, (value,), ttl=ttl))

        await self.shared.run("set", lambda: self.redis.set(key, value, ttl), locally)

    async def delete(self, *keys: str) -> None:
        async def locally() -> None:
            await self.local.delete(*keys)
            self.shared.defer(_QueuedWrite(self.redis, "delete", keys[0], keys[1:]))

        if keys:
            await self.shared.run("delete", lambda: self.redis.delete(*keys), locally)

    async def push_bounded(self, key: str, *values: str, max_len: int, ttl: float) -> None:
        async def locally() -> None:
            await self.local.push_bounded(key, *values, max_len=max_len, ttl=ttl)
            self.shared.defer(_QueuedWrite(self.redis, "push", key, values, max_len, ttl))

        await self.shared.run("push", lambda: self.redis.push_bounded(key, *values, max_len=max_len, ttl=ttl),
                              locally)

    async def get_list(self, key: str) -> list[str]:
        return await self.shared.run("get", lambda: self.redis.get_list(key), lambda: self.local.get_list(key))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.shared.close()
