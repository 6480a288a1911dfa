"""The plugin's store interface: string values with expiry, atomic conditional writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from redis.exceptions import RedisError

Clock = Callable[[], float]

STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
"""What a store raises when Redis does not answer (`RedisWithLocalFallback` serves locally instead)."""


class StateStore(Protocol):
    """Key/value state with expiry: what the fallback engine keeps, and nothing else."""

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

    async def add(self, key: str, amount: int, ttl: float) -> int:
        """Add `amount` to the integer at `key` (0 if absent), which expires `ttl` s after it was created;
        returns the new total. Atomic: concurrent adds from every process all count."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def delete_if_equal(self, key: str, value: str) -> bool:
        """Delete `key` only while it still holds `value` (compare-and-delete)."""
        ...

    async def clear(self, pattern: str = "*") -> int:
        """Delete every key of this store's namespace matching `pattern` (glob, as Redis SCAN MATCH)."""
        ...

    async def close(self) -> None: ...
