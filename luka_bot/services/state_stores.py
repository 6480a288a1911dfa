"""The process's stores, built from the settings: the fallback state and the bot's data.

Both share one Redis pool and health (`SharedRedis`) when Redis is configured (`REDIS_URL`
and/or `REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`), each under its own prefix
(`Settings.redis_prefixes()`); without Redis both live in process memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from luka_bot.core.config import Settings
from luka_bot.services.bot_store import BotStore, BotStoreWithLocalFallback, MemoryBotStore, RedisBotStore
from plugins.llm_fallback import (
    MemoryStateStore,
    RedisOptions,
    RedisStateStore,
    RedisWithLocalFallback,
    SharedRedis,
    StateStore,
    connect_redis,
)
from plugins.llm_fallback.stores import Clock


@dataclass
class Stores:
    fallback: StateStore
    """The fallback plugin's state (cooldowns, probes, force, alerts); `/llm_clear` wipes it."""
    bot: BotStore
    """Conversations and per-chat switches."""
    shared: SharedRedis | None = None

    @property
    def kind(self) -> str:
        """`redis`, `degraded` (Redis configured, not answering) or `memory`."""
        return self.shared.kind if self.shared else "memory"

    async def check(self) -> str:
        """Try Redis now and return the kind in use: say this in the start-up line, not a guess."""
        return await self.shared.check() if self.shared else "memory"

    async def close(self) -> None:
        await self.fallback.close()
        await self.bot.close()


def redis_options(settings: Settings) -> RedisOptions:
    return RedisOptions(
        url=settings.REDIS_URL,
        sentinels=tuple(settings.REDIS_SENTINELS),
        sentinel_master=settings.REDIS_SENTINEL_MASTER,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        pool_timeout=settings.REDIS_POOL_TIMEOUT,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
    )


def _shared(settings: Settings, monotonic: Clock) -> SharedRedis | None:
    options = redis_options(settings)
    if not options.configured:
        return None
    return SharedRedis(connect_redis(options), retry_interval=settings.REDIS_RETRY_INTERVAL, monotonic=monotonic)


def state_store(shared: SharedRedis | None, prefix: str, clock: Clock = time.time) -> StateStore:
    """A `StateStore` under `prefix` on the process's one Redis, process memory standing in while Redis does not
    answer (memory only without Redis); `close()` it when done (the last store closes the pool)."""
    if shared is None:
        return MemoryStateStore(clock)
    return RedisWithLocalFallback(RedisStateStore(shared.client, prefix=prefix), MemoryStateStore(clock), shared=shared)


def _fallback_store(settings: Settings, shared: SharedRedis | None, clock: Clock) -> StateStore:
    prefix, _ = settings.redis_prefixes()
    return state_store(shared, prefix, clock)


def build_stores(settings: Settings, *, clock: Clock = time.time, monotonic: Clock = time.monotonic) -> Stores:
    """The fallback store and the bot store for these settings, on one shared Redis pool."""
    shared = _shared(settings, monotonic)
    fallback = _fallback_store(settings, shared, clock)
    if shared is None:
        return Stores(fallback, MemoryBotStore(clock))
    _, bot_prefix = settings.redis_prefixes()
    bot = BotStoreWithLocalFallback(RedisBotStore(RedisStateStore(shared.client, prefix=bot_prefix)), shared,
                           MemoryBotStore(clock))
    return Stores(fallback, bot, shared)


def build_fallback_store(settings: Settings) -> StateStore:
    """Only the fallback store (its own pool): for the seed API's process-wide fallback service."""
    return _fallback_store(settings, _shared(settings, time.monotonic), time.time)
