"""Redis: the client (one bounded pool, plain URL or Sentinel) and the plugin's store on it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

DEFAULT_MAX_CONNECTIONS = 20
DEFAULT_POOL_TIMEOUT = 5.0
DEFAULT_SOCKET_TIMEOUT = 0.5


@dataclass(frozen=True)
class RedisOptions:
    """Where Redis is and how to talk to it.

    - `url`: `redis://` or `rediss://` (TLS, with redis-py's `ssl_*` query options); with
      `sentinels`, only its credentials, database and TLS are used;
    - `sentinels` + `sentinel_master`: ask these Sentinels for the current master of that name;
    - `max_connections`: size of the one connection pool (callers wait for a free connection);
    - `pool_timeout`: seconds a command may wait for a free connection before failing;
    - `socket_timeout`: seconds to connect or to get an answer (a hung Redis is noticed this fast).
    """

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    pool_timeout: float = DEFAULT_POOL_TIMEOUT
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT

    @property
    def configured(self) -> bool:
        return bool(self.url or self.sentinels)


def connect_redis(options: RedisOptions) -> Redis:
    """A client on one bounded pool; no client-side retries (the local_fallback store decides what to do)."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if options.sentinels:
        if not options.sentinel_master:
            raise ValueError("a Sentinel setup needs the master's name")
        from_url = _url_credentials(options.url)
        sentinel = Sentinel(list(options.sentinels), sentinel_kwargs={
            "socket_timeout": options.socket_timeout, "socket_connect_timeout": options.socket_timeout,
            "retry": Retry(NoBackoff(), 0)}, **common, **from_url)
        # redis-py's Sentinel pool does not block; the store's own gate (SharedRedis) keeps the
        # connections in use at `max_connections`, and the pool is capped there too.
        return sentinel.master_for(options.sentinel_master, max_connections=options.max_connections)
    if not options.url:
        raise ValueError("no Redis URL")
    pool = BlockingConnectionPool.from_url(options.url, max_connections=options.max_connections,
                                           timeout=options.pool_timeout, **common)
    return Redis(connection_pool=pool)


def _url_credentials(url: str | None) -> dict[str, Any]:
    """Database, credentials and TLS of `url` (for connections to a Sentinel-managed master)."""
    if not url:
        return {}
    kwargs = dict(parse_url(url))
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is SSLConnection:
        kwargs["ssl"] = True
    return kwargs


def max_connections(client: Redis) -> int:
    """The pool size of `client`."""
    return int(client.connection_pool.max_connections)


_GLOB_SPECIALS = re.compile(r"([*?\[\]\\])")


def escape_glob(text: str) -> str:
    """`text` as a literal in a Redis glob pattern (SCAN MATCH)."""
    return _GLOB_SPECIALS.sub(r"\\\1", text)


_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_ADD = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return total
"""
_REPLACE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStateStore:
    """Shared store on Redis: keys under `prefix`, TTLs in ms, atomic writes, no client retries.

    A failed command raises `redis.exceptions.RedisError` / `OSError` at once (no retry loop,
    short timeouts); `RedisWithLocalFallback` decides what to do about it.
    """

    kind = "redis"

    def __init__(self, client: Redis, *, prefix: str = "llm:"):
        if not prefix:
            raise ValueError("a Redis store needs a key prefix")
        self.client = client
        self.prefix = prefix
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._replace_if_equal = client.register_script(_REPLACE_IF_EQUAL)
        self._add = client.register_script(_ADD)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "llm:", timeout: float = DEFAULT_SOCKET_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> RedisStateStore:
        return cls(connect_redis(RedisOptions(url, socket_timeout=timeout, max_connections=max_connections)),
                   prefix=prefix)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        return list(await self.client.mget([self._k(k) for k in keys]))

    async def set(self, key: str, value: str, ttl: float, *, only_if_absent: bool = False) -> bool:
        return bool(await self.client.set(self._k(key), value, px=ms(ttl), nx=only_if_absent))

    async def replace_if_equal(self, key: str, expected: str, value: str, ttl: float) -> bool:
        return bool(await self._replace_if_equal(keys=[self._k(key)], args=[expected, value, ms(ttl)]))

    async def add(self, key: str, amount: int, ttl: float) -> int:
        return int(await self._add(keys=[self._k(key)], args=[amount, ms(ttl)]))

    async def delete(self, *keys: str) -> int:
        return int(await self.client.delete(*[self._k(k) for k in keys])) if keys else 0

    async def delete_if_equal(self, key: str, value: str) -> bool:
        return bool(await self._delete_if_equal(keys=[self._k(key)], args=[value]))

    async def clear(self, pattern: str = "*") -> int:
        """Delete this namespace's keys matching `pattern`; the prefix is matched literally."""
        match = escape_glob(self.prefix) + pattern
        doomed = [key async for key in self.client.scan_iter(match=match, count=500)]
        return int(await self.client.delete(*doomed)) if doomed else 0

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)
