"""Tokens each user spent today, counted in the bot's shared store, against a daily quota.

The day is the calendar day of the provider budgets (`Budgets.period_of`: it starts at midnight
in `LLM_BUDGET_TIMEZONE`). One counter per user and day, `tokens:<day>:<user>`, that every
process adds to atomically with the store's `add`, as the provider budgets count their tokens.
While Redis does not answer, each process counts in its own memory, sees only what it counted
since, and adds that to Redis's total when Redis answers again (a count whose first try timed
out may be added twice: the quota errs on the side of limiting).
"""

from __future__ import annotations

import time

from plugins.llm_fallback import StateStore
from plugins.llm_fallback.budget import KEEP_AFTER, Budgets
from plugins.llm_fallback.stores import Clock


class DailyTokens:
    """Each user's LLM tokens today, against a daily `limit` (see module doc)."""

    def __init__(self, limit: int, store: StateStore, calendar: Budgets, *, clock: Clock = time.time):
        self.limit = limit
        self.store = store
        self.calendar = calendar
        """Only its days are used: `period_of` and `ends_at` (a daily calendar in the budgets' time zone)."""
        self.clock = clock

    async def spent(self, user_id: int) -> int:
        """Tokens `user_id` spent today (every replica's, while Redis answers)."""
        (value,) = await self.store.get_many([self._key(user_id)])
        return int(value or 0)

    async def over(self, user_id: int) -> bool:
        return await self.spent(user_id) >= self.limit

    async def add(self, user_id: int, tokens: int) -> None:
        """Count `tokens` spent by `user_id` now."""
        if tokens > 0:
            await self.store.add(self._key(user_id), tokens, KEEP_AFTER)  # kept past its day, as a budget's period

    def seconds_to_next_day(self) -> float:
        now = self.clock()
        return max(self.calendar.ends_at(now) - now, 0.0)

    async def close(self) -> None:
        await self.store.close()

    def _key(self, user_id: int) -> str:
        return f"tokens:{self.calendar.period_of(self.clock())}:{user_id}"
