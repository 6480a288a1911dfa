"""Per-user limits: one user cannot drain the paid fallback.

- `limits`: the checks for one message: the user's rate (shared by every replica), their daily
  tokens, one notice per window;
- the buckets are the send pacer's (`luka_bot.core.rate_buckets`: GCRA in Redis, or per process
  while Redis is away);
- `quota`: each user's tokens today, counted in the bot's shared store;
- `usage`: the pydantic-ai capability that counts each agent run's tokens against the user served;
- `middleware`: the aiogram middleware that applies them to handlers flagged `costs_llm`.
"""

from __future__ import annotations

import logging
import time

from aiogram import Dispatcher

from luka_bot.core.config import Settings
from luka_bot.core.metrics import BotMetrics, throttled_counter
from plugins.llm_fallback import SharedRedis

from .limits import Clock, Reason, Refusal, UserLimits
from .middleware import COSTS_LLM, UserLimitsMiddleware, notice
from .quota import DailyTokens
from .usage import CountTokens, counting_for

__all__ = ["COSTS_LLM", "CountTokens", "DailyTokens", "Reason", "Refusal", "UserLimits", "UserLimitsMiddleware",
           "counting_for", "find_user_limits", "notice", "setup_user_limits"]

logger = logging.getLogger("luka_bot")


def setup_user_limits(dp: Dispatcher, settings: Settings, shared: SharedRedis | None,
                      metrics: BotMetrics | None = None, *, clock: Clock = time.time) -> UserLimits:
    """Apply the settings' per-user limits to `dp`'s messages, kept in `shared` Redis (None: this process)."""
    limits = UserLimits.from_settings(settings, shared, clock=clock)
    if limits.active:
        counter = throttled_counter(metrics.registry) if metrics is not None else None
        dp.message.middleware(UserLimitsMiddleware(limits, settings.ADMIN_IDS, counter))

    async def say_limits() -> None:
        logger.info("👥 Per-user limits: %s", limits.describe() if limits.active else "off")

    dp.startup.register(say_limits)
    dp.shutdown.register(limits.close)  # before the stores close the shared pool
    return limits


def find_user_limits(dp: Dispatcher) -> UserLimits | None:
    """The limits `setup_user_limits` applied to `dp` (None when they are off)."""
    return next((m.limits for m in dp.message.middleware if isinstance(m, UserLimitsMiddleware)), None)
