"""One bot's per-user limits: how fast a user's messages may cost LLM calls, and how many tokens a day.

- the rate: a GCRA bucket per user (`USER_RATE_LIMIT` per `USER_RATE_WINDOW` s, `USER_RATE_BURST`
  at once), judged at the time Telegram gives the message, so every replica judges a message
  alike and a backlog handled late (after a restart, behind a slow answer) is judged by when the
  user wrote it, not by when it was handled;
- the notices: a second bucket per user, one token per window, so a user gets at most one
  notice per window whatever they send;
- the daily tokens (`DailyTokens`), when `USER_DAILY_TOKENS` is set.

The buckets and the counters live under the bot's prefix, `luka:<bot id>:limits:`.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from zoneinfo import ZoneInfo

from pyrate_limiter import Rate

from luka_bot.core.config import Settings
from luka_bot.core.rate_buckets import Clock, RateBuckets, per_window
from luka_bot.services.state_stores import state_store
from plugins.llm_fallback import SharedRedis
from plugins.llm_fallback.budget import Budgets, Period

from .quota import DailyTokens
from .usage import counting_for


class Reason(Enum):
    RATE = "rate"
    QUOTA = "quota"


@dataclass(frozen=True)
class Refusal:
    """A message that will cost no LLM call: why, and in how many seconds the user may write again."""

    reason: Reason
    retry_after: float


class UserLimits:
    """The checks the limits middleware makes for one user's message (see module doc)."""

    def __init__(self, *, rate_limit: Rate | None, window: float, quota: DailyTokens | None = None,
                 clock: Clock = time.time):
        self.rate_limit = rate_limit
        self.window = window
        self.notices = per_window(1, window, 1)
        self.quota = quota
        refill = window * max(1.0, rate_limit.burst / rate_limit.limit) if rate_limit is not None else window
        self.buckets = RateBuckets(clock=clock, forget_after=2 * refill, name="per-user limits")

    @classmethod
    def from_settings(cls, settings: Settings, shared: SharedRedis | None = None, *,
                      clock: Clock = time.time) -> UserLimits:
        """The settings' limits, kept in `shared` Redis for every replica (None: in this process)."""
        prefix = settings.redis_prefixes()[1] + "limits:"
        rate_limit = None
        if settings.USER_RATE_LIMIT:
            rate_limit = per_window(settings.USER_RATE_LIMIT, settings.USER_RATE_WINDOW, settings.USER_RATE_BURST)
        quota = None
        if settings.USER_DAILY_TOKENS:
            calendar = Budgets(period=Period.DAY, zone=ZoneInfo(settings.LLM_BUDGET_TIMEZONE))
            quota = DailyTokens(settings.USER_DAILY_TOKENS, state_store(shared, prefix, clock), calendar, clock=clock)
        limits = cls(rate_limit=rate_limit, window=settings.USER_RATE_WINDOW, quota=quota, clock=clock)
        limits.buckets.share(shared, prefix)
        return limits

    @property
    def active(self) -> bool:
        return self.rate_limit is not None or self.quota is not None

    async def check(self, user_id: int, at: datetime | None = None) -> Refusal | None:
        """None: the message may cost LLM calls (and took its place in the rate); else why not."""
        if self.rate_limit is not None:
            wait = await self.buckets.take(f"rate:{user_id}", [self.rate_limit], at)
            if wait:
                return Refusal(Reason.RATE, wait)
        if self.quota is not None and await self.quota.over(user_id):
            return Refusal(Reason.QUOTA, self.quota.seconds_to_next_day())
        return None

    async def may_notify(self, user_id: int, at: datetime | None = None) -> bool:
        """Whether this refusal gets a notice: the first one in a window does."""
        return not await self.buckets.take(f"notice:{user_id}", [self.notices], at)

    def counting(self, user_id: int) -> AbstractContextManager[None]:
        """Agent runs in this block count their tokens against `user_id`'s day (when there is a quota)."""
        quota = self.quota
        if quota is None:
            return contextlib.nullcontext()

        async def tally(tokens: int) -> None:
            await quota.add(user_id, tokens)

        return counting_for(tally)

    async def close(self) -> None:
        if self.quota is not None:
            await self.quota.close()

    def describe(self) -> str:
        """For the start-up line."""
        parts = []
        if self.rate_limit is not None:
            where = ("shared by every replica (Redis)" if self.buckets.shared is not None
                     else "this process only (set REDIS_URL to share it)")
            parts.append(f"{self.rate_limit.limit} messages per {self.window:g}s ({self.rate_limit.burst} at once), "
                         f"{where}")
        else:
            parts.append("no message rate limit")
        if self.quota is not None:
            parts.append(f"{self.quota.limit} tokens per user per day (from 00:00 {self.quota.calendar.zone})")
        return "; ".join(parts)
