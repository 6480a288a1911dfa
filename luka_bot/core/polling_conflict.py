"""Long polling answered 409 Conflict: say so once, clearly, and retry quietly.

Telegram lets one consumer take a bot's updates: a second process long-polling with the same
token (or polling while a webhook is set) gets `409 Conflict` on `getUpdates`. aiogram's
polling loop would log an error and a warning for every retry; this session middleware
instead logs one WARNING per `remind_every` seconds that points to webhook mode (the way to
run replicas), and retries `getUpdates` itself with a growing pause (at most `max_delay`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramConflictError
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response

logger = logging.getLogger("luka_bot")

REMIND_EVERY = 600.0
MIN_DELAY = 1.0
MAX_DELAY = 30.0


class PollingConflictMiddleware(BaseRequestMiddleware):
    def __init__(self, *, remind_every: float = REMIND_EVERY, min_delay: float = MIN_DELAY,
                 max_delay: float = MAX_DELAY, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.remind_every = remind_every
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.clock = clock
        self.conflicts = 0
        """409s on getUpdates so far."""
        self._warned_at: float | None = None

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Response[Any]:
        if not isinstance(method, GetUpdates):
            return await make_request(bot, method)
        delay = self.min_delay
        while True:
            try:
                return await make_request(bot, method)
            except TelegramConflictError as error:
                self._note(error)
            await self.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    def _note(self, error: TelegramConflictError) -> None:
        self.conflicts += 1
        now = self.clock()
        if self._warned_at is not None and now - self._warned_at < self.remind_every:
            return
        logger.warning(
            "⚠️ Telegram refuses long polling (409 Conflict: %s): another process is taking this bot's updates. "
            "Only one process may long-poll a bot token; to run several replicas use webhook mode (WEBHOOK_URL), "
            "or stop the other process. Retrying quietly every ≤%ds (%d conflicts so far; next reminder in %d min).",
            error.message, round(self.max_delay), self.conflicts, round(self.remind_every / 60))
        self._warned_at = now
