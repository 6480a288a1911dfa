"""The aiogram middleware that keeps each user within their limits, before any LLM call is made.

It is an inner middleware on messages, so it sees the handler the message will reach: only a
handler flagged `costs_llm` (`flags={COSTS_LLM: True}`) is limited. Commands, callback queries
and everything else are never counted nor refused, so a user over their limit can still use
/new, /help or the admin buttons. Admins (ADMIN_IDS) are never limited.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.flags import get_flag
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message, TelegramObject
from aiogram.utils.i18n import gettext as _

from plugins.llm_fallback.texts import duration

from .limits import Reason, Refusal, UserLimits

logger = logging.getLogger("luka_bot")

COSTS_LLM = "costs_llm"
"""The handler flag of what costs LLM calls (the chat reply and its thread name)."""


def notice(refusal: Refusal) -> str:
    wait = duration(math.ceil(refusal.retry_after))
    if refusal.reason is Reason.QUOTA:
        return _("📊 You have used up today's limit. I'll answer again in {wait}.").format(wait=wait)
    return _("⏳ Too many messages: I skipped this one. Write again in {wait}.").format(wait=wait)


class UserLimitsMiddleware(BaseMiddleware):
    """Refuses, with at most one notice per window, a user's message that is over their limits."""

    def __init__(self, limits: UserLimits, admin_ids: Collection[int],
                 throttled: Callable[[str], None] | None = None):
        self.limits = limits
        self.admin_ids = frozenset(admin_ids)
        self.throttled = throttled or (lambda reason: None)
        """Counts a refused message by reason (the `bot_throttled_total` metric when metrics are on)."""

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        user = getattr(event, "from_user", None)
        if (not isinstance(event, Message) or user is None or user.id in self.admin_ids
                or not get_flag(data, COSTS_LLM)):
            return await handler(event, data)
        refusal = await self.limits.check(user.id, event.date)
        if refusal is None:
            with self.limits.counting(user.id):
                return await handler(event, data)
        self.throttled(refusal.reason.value)
        if await self.limits.may_notify(user.id, event.date):
            logger.info("⏳ user %s is over the %s limit: their messages cost no LLM call for %ds (one notice "
                        "per %gs)", user.id, refusal.reason.value, math.ceil(refusal.retry_after), self.limits.window)
            try:
                await event.answer(notice(refusal), parse_mode=None)
            except TelegramAPIError as error:
                logger.info("limit notice to user %s not delivered: %s", user.id, error.message)
        return None
