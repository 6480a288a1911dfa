"""How one frame of a reply in progress reaches the chat: a draft, or an edit of one message."""

from __future__ import annotations

import contextlib
from typing import Protocol

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest

from luka_bot.services.message_text import TELEGRAM_LIMIT, split_text

from .capabilities import PreviewMode

PLACEHOLDER = "…"


def visible_tail(text: str) -> str:
    """What fits in one message: the text, or its last chunk as the final split will send it."""
    return text if len(text) <= TELEGRAM_LIMIT else split_text(text)[-1]


class Frames(Protocol):
    mode: PreviewMode

    async def send(self, text: str) -> None:
        """Show `text` (the whole reply so far; "" = starting over). Telegram errors propagate."""

    async def finish(self, chunks: list[str]) -> list[str]:
        """Take over as much of the final message as this preview can; return the chunks left to send.

        Raises Telegram's error when it can't (then `discard()` and send every chunk).
        """

    async def discard(self) -> None:
        """Leave nothing of this preview in the chat (it was replaced by another mode)."""


class DraftFrames:
    """`sendMessageDraft`, one `draft_id` per reply: animated, ephemeral, with a Stop button."""

    mode = PreviewMode.DRAFT

    def __init__(self, bot: Bot, chat_id: int, draft_id: int, thread_id: int | None = None):
        self.bot = bot
        self.chat_id = chat_id
        self.draft_id = draft_id
        self.thread_id = thread_id

    async def send(self, text: str) -> None:
        # "" shows Telegram's "Thinking…" placeholder: a restarted reply starts from it.
        await self.bot.send_message_draft(chat_id=self.chat_id, draft_id=self.draft_id, text=visible_tail(text),
                                          message_thread_id=self.thread_id, parse_mode=None, can_stop=True)

    async def finish(self, chunks: list[str]) -> list[str]:
        return chunks  # a draft is never the message: the final one is sent and replaces it

    async def discard(self) -> None:
        return None  # ephemeral: it disappears by itself


class EditFrames:
    """One message sent at the first frame, then edited (`editMessageText`); it becomes the answer."""

    mode = PreviewMode.EDIT

    def __init__(self, bot: Bot, chat_id: int, thread_id: int | None = None):
        self.bot = bot
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.message_id: int | None = None

    async def send(self, text: str) -> None:
        if self.message_id is None:
            if text:
                sent = await self.bot.send_message(self.chat_id, visible_tail(text), parse_mode=None,
                                                   message_thread_id=self.thread_id)
                self.message_id = sent.message_id
            return
        await self._edit(visible_tail(text) or PLACEHOLDER)

    async def finish(self, chunks: list[str]) -> list[str]:
        if self.message_id is None:
            return chunks
        await self._edit(chunks[0])
        return chunks[1:]

    async def discard(self) -> None:
        """Remove the partial message, if any (best effort)."""
        if self.message_id is not None:
            with contextlib.suppress(TelegramAPIError):
                await self.bot.delete_message(self.chat_id, self.message_id)
            self.message_id = None

    async def _edit(self, text: str) -> None:
        try:
            await self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self.message_id,
                                             parse_mode=None)
        except TelegramBadRequest as error:
            if "message is not modified" not in error.message:
                raise
