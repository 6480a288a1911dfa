"""Flood control: a Bot API call answered with 429 waits `retry_after` and is retried once.

Not a draft frame (`sendMessageDraft`): the next frame supersedes it, and waiting here would hold
up the reply; the draft writer pauses its frames itself (luka_bot.services.streaming.preview).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendMessageDraft, TelegramMethod
from aiogram.methods.base import Response

logger = logging.getLogger(__name__)

MAX_WAIT = 60
NOT_RETRIED = (SendMessageDraft,)


class RetryAfterMiddleware(BaseRequestMiddleware):
    def __init__(self, max_wait: float = MAX_WAIT, sleep: Any = asyncio.sleep):
        self.max_wait = max_wait
        self.sleep = sleep

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Response[Any]:
        try:
            return await make_request(bot, method)
        except TelegramRetryAfter as error:
            if error.retry_after > self.max_wait or isinstance(method, NOT_RETRIED):
                raise
            logger.warning("Telegram flood control on %s: waiting %ss, then retrying once",
                           type(method).__name__, error.retry_after)
            await self.sleep(error.retry_after)
            return await make_request(bot, method)
