#!/usr/bin/env python
"""The anchor arm of `load_burst.py --flood`: a minimal aiogram bot paced by aiolimiter.

What a careful aiogram developer writes in an afternoon: a session middleware with one
`aiolimiter.AsyncLimiter` per chat (1/s, a burst of 3), one per group (20/min) and one overall
(30/s), acquired in that order, and a retry after `retry_after` (at most 3 times). Every text
message gets, after 50 ms of "work", a title and an answer: the two sends our bot makes per user.

    python benchmarks/anchor_bot.py <Bot API base URL> <token>
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendChatAction, TelegramMethod
from aiogram.types import Message
from aiolimiter import AsyncLimiter

WORK = 0.05
RETRIES = 3


class AioLimiterPacing(BaseRequestMiddleware):
    def __init__(self) -> None:
        self.overall = AsyncLimiter(30, 1)
        self.chats: dict[Any, AsyncLimiter] = {}
        self.groups: dict[Any, AsyncLimiter] = {}

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Any:
        chat = getattr(method, "chat_id", None)
        if chat is None or isinstance(method, SendChatAction) or not type(method).__name__.startswith(("Send", "Edit")):
            return await make_request(bot, method)
        for attempt in range(RETRIES + 1):
            await self.chats.setdefault(chat, AsyncLimiter(3, 3)).acquire()
            if isinstance(chat, str) or chat < 0:
                await self.groups.setdefault(chat, AsyncLimiter(20, 60)).acquire()
            await self.overall.acquire()
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as error:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(error.retry_after)
        raise AssertionError("unreachable")


async def main(api_url: str, token: str) -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    session.middleware(AioLimiterPacing())
    bot = Bot(token, session=session)
    dp = Dispatcher()

    @dp.message(F.text)
    async def answer(message: Message) -> None:
        await asyncio.sleep(WORK)
        await message.answer("🧵 title")
        await message.answer("answer")

    await dp.start_polling(bot, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
