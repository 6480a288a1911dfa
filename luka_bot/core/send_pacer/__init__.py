"""One pacer for everything the bot sends into chats: Telegram's flood limits, one budget per bot.

- `budget`: token buckets (pyrate-limiter GCRA), in Redis for every replica or per process;
- `pauses`: what a 429 pauses (a chat or the whole bot), one log line per flood episode;
- `pacer`: when a send may go (chat bucket, pauses, the overall bucket by priority);
- `priority`: how a caller marks what it sends (`sending_as(Priority.FRAME)`);
- `middleware`: the aiogram session middleware that applies it to every Bot API call.
"""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent

from luka_bot.core.config import Settings
from plugins.llm_fallback import SharedRedis

from .budget import Limits, SendBudget
from .middleware import FrameSkipped, NoMetrics, PacedSends, SendMetrics, SendNotDelivered
from .pacer import SendPacer
from .pauses import FloodPauses, Scope
from .priority import Priority, priority_of, sending_as

__all__ = ["FloodPauses", "FrameSkipped", "Limits", "NoMetrics", "PacedSends", "Priority", "Scope", "SendBudget",
           "SendMetrics", "SendNotDelivered", "SendPacer", "describe", "find_paced_sends", "paced_sends",
           "priority_of", "sending_as", "setup_paced_sends"]


def paced_sends(settings: Settings) -> PacedSends:
    """The session middleware for these settings (per process until `setup_paced_sends` shares it)."""
    limits = Limits(per_second=settings.TELEGRAM_SENDS_PER_SECOND, burst=settings.TELEGRAM_SENDS_BURST,
                    chat_per_second=settings.TELEGRAM_CHAT_SENDS_PER_SECOND, chat_burst=settings.TELEGRAM_CHAT_BURST,
                    group_per_minute=settings.TELEGRAM_GROUP_SENDS_PER_MINUTE)
    return PacedSends(SendPacer(limits), deadline=settings.TELEGRAM_SEND_DEADLINE)


def find_paced_sends(bot: Bot) -> PacedSends | None:
    return next((m for m in bot.session.middleware if isinstance(m, PacedSends)), None)


async def _undelivered(event: ErrorEvent) -> bool:
    return True  # logged once, at ERROR, with its chat id, where it was given up


def setup_paced_sends(bot: Bot, dp: Dispatcher, shared: SharedRedis | None, prefix: str) -> PacedSends | None:
    """Share the bot's pacer through `shared` Redis (keys under `prefix`); a send given up is no traceback."""
    dp.errors.register(_undelivered, ExceptionTypeFilter(SendNotDelivered))
    paced = find_paced_sends(bot)
    if paced is not None:
        paced.pacer.share(shared, prefix)
    return paced


def describe(paced: PacedSends | None) -> str:
    """For the start-up line: who shares the send budget."""
    if paced is None:
        return "not paced"
    rate = f"{paced.pacer.limits.per_second:g}/s"
    if paced.pacer.budget.shared is None:
        return f"{rate}, this process only (set REDIS_URL to share it between replicas)"
    if paced.pacer.budget.scope == "process":
        return f"{rate}, shared by every replica through Redis (this process alone until Redis answers)"
    return f"{rate}, shared by every replica (Redis)"
