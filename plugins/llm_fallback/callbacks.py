"""`AnswerUnhandledCallbacks`: no inline button keeps spinning because nobody handled its query.

Registered as an outer middleware on the dispatcher's `callback_query` observer, it sees the
result of the whole routing: when no handler took the query (unknown or stale callback data,
from this plugin or any other router), it answers the query without text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, TelegramObject

logger = logging.getLogger(__name__)


class AnswerUnhandledCallbacks(BaseMiddleware):
    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        result = await handler(event, data)
        if result is UNHANDLED and isinstance(event, CallbackQuery):
            try:
                await event.answer()
            except TelegramAPIError as error:  # the query may be too old to answer
                logger.info("could not answer an unhandled callback query: %s", error)
        return result
