"""Process-local store: the default without Redis, and the stand-in while Redis is away."""

from __future__ import annotations

import time
from collections.abc import Sequence
from fnmatch import fnmatchcase

from .base import Clock


class MemoryStateStore:
    """Values with expiry in a dict; expiry follows the injected clock, so tests never sleep."""

    kind = "memory"

    def __init__(self, clock: Clock = time.time):
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._values[key]
            return None
        return item[0]

    def holds(self, key: str) -> bool:
        """Whether `key` has a live value here."""
        return self._live(key) is not None

    def matching(self, pattern: str) -> list[str]:
        """The live keys matching the glob `pattern`."""
        return [key for key in list(self._values) if fnmatchcase(key, pattern) and self._live(key) is not None]

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

    async def add(self, key: str, amount: int, ttl: float) -> int:
        current = self._values.get(key) if self._live(key) is not None else None
        total = (int(current[0]) if current else 0) + amount
        self._values[key] = (str(total), current[1] if current else self._clock() + ttl)
        return total

    async def delete(self, *keys: str) -> int:
        return sum(self._live(key) is not None and self._values.pop(key, None) is not None for key in keys)

    async def delete_if_equal(self, key: str, value: str) -> bool:
        if self._live(key) == value:
            del self._values[key]
            return True
        return False

    async def clear(self, pattern: str = "*") -> int:
        return await self.delete(*self.matching(pattern))

    def reset(self) -> None:
        """Forget everything (after Redis came back: Redis is the truth again)."""
        self._values.clear()

    async def close(self) -> None:
        return None
