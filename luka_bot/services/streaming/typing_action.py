""""typing…" while a reply is generated, without leaking a failed background task."""

from __future__ import annotations

import logging

from aiogram.utils.chat_action import ChatActionSender

logger = logging.getLogger(__name__)


class TypingAction(ChatActionSender):
    """aiogram's `ChatActionSender`, whose background task ends quietly when `sendChatAction` fails.

    Upstream, a failing `sendChatAction` (flood control, a Bot API hiccup, a blocked bot) kills the
    sender's task with the exception, which nobody awaits: asyncio then logs "Task exception was
    never retrieved" with a traceback, once per message. Here the task logs one line and stops
    showing "typing…" for this reply; the reply itself goes on.
    """

    async def _worker(self) -> None:
        try:
            await super()._worker()
        except Exception as error:  # noqa: BLE001 - the indicator is cosmetic; the reply must go on
            logger.info("typing indicator stopped in chat %s: %s: %s", self.chat_id, type(error).__name__,
                        getattr(error, "message", error))
