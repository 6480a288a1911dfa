""""typing…" while a reply is generated, without leaking a failed background task."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiogram import Bot

from luka_bot.services.task_cancel import cancel_and_wait

logger = logging.getLogger(__name__)

INTERVAL = 5.0
"""Telegram shows a chat action for 5 s (or until the next message): renew it that often."""


class TypingAction:
    """"typing…" in a chat for as long as the block runs (`async with TypingAction.typing(...)`).

    Like aiogram's `ChatActionSender`, except for a failing `sendChatAction` (flood control, a Bot
    API hiccup, a blocked bot): upstream that kills the sender's task with an exception nobody
    awaits, and asyncio logs "Task exception was never retrieved" with a traceback, once per
    message. Here the task logs one line and stops showing "typing…" for this reply; the reply
    itself goes on.
    """

    def __init__(self, bot: Bot, chat_id: int | str, *, message_thread_id: int | None = None,
                 interval: float = INTERVAL):
        self.bot = bot
        self.chat_id = chat_id
        self.message_thread_id = message_thread_id
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def typing(cls, *, bot: Bot, chat_id: int | str, message_thread_id: int | None = None) -> TypingAction:
        return cls(bot, chat_id, message_thread_id=message_thread_id)

    async def __aenter__(self) -> TypingAction:
        self._task = asyncio.create_task(self._show(), name="typing-action")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _show(self) -> None:
        while True:
            try:
                await self.bot.send_chat_action(chat_id=self.chat_id, action="typing",
                                                message_thread_id=self.message_thread_id)
            except Exception as error:  # noqa: BLE001 - the indicator is cosmetic; the reply must go on
                logger.info("typing indicator stopped in chat %s: %s: %s", self.chat_id, type(error).__name__,
                            getattr(error, "message", error))
                return
            await asyncio.sleep(self.interval)
