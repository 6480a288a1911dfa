"""One Redis for the whole process: its pool, whether it answers, and what waits to be written back.

Every store of a process (the plugin's fallback state, the bot's conversations) goes through
one `SharedRedis`:

- a gate of `max_connections` slots in front of the pool: callers wait their turn (a burst
  never sees "Too many connections"), and a caller that waited while Redis went away is served
  locally instead of trying a dead server too;
- health: the first command that fails marks Redis down (one ERROR line) and every store
  serves from process memory; after `retry_interval` seconds one caller — only one — tries
  again: it writes back the pending writes in order, then Redis is up again (one WARNING line);
- pending writes (`PendingWrite`): what stores ask to have written to Redis when it returns.
  Only the recovering caller applies them, one at a time, and drops each only after it was
  applied, so none runs twice in this process or is dropped unapplied; each must be safe to
  apply again after a timeout whose outcome is unknown (idempotent). The recovering caller pays
  for the write-back (one round trip per pending write, well under a millisecond on a LAN);
  every other caller meanwhile is served locally and does not wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from redis.asyncio import Redis

from .base import STORE_ERRORS, Clock
from .redis import max_connections

logger = logging.getLogger("plugins.llm_fallback.stores")

T = TypeVar("T")

DEFAULT_RETRY_INTERVAL = 5.0
DEFAULT_MAX_PENDING = 100_000


class PendingWrite(Protocol):
    """A write made locally while Redis was away, to be applied on Redis when it returns."""

    async def apply(self) -> None:
        """Apply it on Redis; safe to call again if an earlier call's outcome is unknown."""
        ...


class SharedRedis:
    """The process's Redis client, its health, and the writes waiting for it (see module doc)."""

    def __init__(self, client: Redis, *, retry_interval: float = DEFAULT_RETRY_INTERVAL,
                 monotonic: Clock = time.monotonic, max_pending: int = DEFAULT_MAX_PENDING):
        self.client = client
        self.retry_interval = retry_interval
        self.max_pending = max_pending
        self._monotonic = monotonic
        self._slots = asyncio.Semaphore(max_connections(client))
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._recovering = False
        self._pending: deque[PendingWrite] = deque()
        self._dropped = 0
        self._on_recovered: list[Callable[[], None]] = []
        self._users = 0
        self.written_back = 0
        """Pending writes applied on Redis after outages (for status and tests)."""

    @property
    def kind(self) -> str:
        return "redis" if self._down_since is None else "degraded"

    @property
    def pending(self) -> int:
        return len(self._pending)

    def attach(self, on_recovered: Callable[[], None]) -> None:
        """A store starts using this Redis; `on_recovered` runs once Redis is back (e.g. forget local state)."""
        self._users += 1
        self._on_recovered.append(on_recovered)

    def defer(self, write: PendingWrite) -> None:
        """Apply `write` on Redis when it returns (the oldest is dropped past `max_pending`)."""
        self._pending.append(write)
        if len(self._pending) > self.max_pending:
            self._pending.popleft()
            self._dropped += 1

    async def run(self, name: str, redis_call: Callable[[], Awaitable[T]], local_call: Callable[[], Awaitable[T]]) -> T:
        """`redis_call()` while Redis answers, else `local_call()`; never raises a store error."""
        if self._down_since is not None and not await self._recover():
            return await local_call()
        async with self._slots:
            if self._down_since is None:
                try:
                    return await redis_call()
                except STORE_ERRORS as error:
                    self._went_down(name, error)
        return await local_call()

    async def check(self) -> str:
        """Try Redis now (one PING, or a recovery if it is due) and return `kind` (e.g. for a start-up line)."""
        async def ping() -> None:
            await self.client.ping()

        async def nothing() -> None:
            return None

        await self.run("ping", ping, nothing)
        return self.kind

    def _went_down(self, name: str, error: BaseException) -> None:
        now = self._monotonic()
        self._retry_at = now + self.retry_interval
        if self._down_since is None:
            self._down_since = now
            logger.error("❌ Redis state store unavailable (%s: %s: %s); serving from process-local state",
                         name, type(error).__name__, error)

    async def _recover(self) -> bool:
        """Whether Redis is back (this caller wrote back what was pending); one caller at a time."""
        if self._recovering or self._monotonic() < self._retry_at:
            return False
        self._recovering = True
        written = 0
        try:
            async with self._slots:
                await self.client.ping()
                while self._pending:  # callers served locally meanwhile append here; all go first
                    write = self._pending[0]
                    try:
                        await write.apply()
                    except STORE_ERRORS:
                        raise
                    except Exception as error:  # noqa: BLE001 - a bug in one write must not block the others
                        logger.error("a write made while Redis was away could not be written back: %r", error)
                    self._pending.popleft()
                    written += 1
        except STORE_ERRORS as error:
            self.written_back += written
            self._retry_at = self._monotonic() + self.retry_interval
            logger.debug("Redis still unavailable: %s: %s", type(error).__name__, error)
            return False
        finally:
            self._recovering = False
        self.written_back += written
        # Nothing pending, nothing awaited since: from here every store reads and writes Redis.
        assert self._down_since is not None
        down_for = self._monotonic() - self._down_since
        self._down_since = None
        for forget in self._on_recovered:
            forget()
        lost = f"; {self._dropped} older writes were dropped (more than {self.max_pending} pending)" \
            if self._dropped else ""
        self._dropped = 0
        logger.warning("✅ Redis state store is back after %.1fs; shared state resumed (%d writes written back%s)",
                       down_for, written, lost)
        return True

    async def close(self) -> None:
        """A store is done with it; the last one closes the client and its pool."""
        self._users -= 1
        if self._users <= 0:
            await self.client.aclose(close_connection_pool=True)
