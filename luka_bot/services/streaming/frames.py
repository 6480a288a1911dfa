"""How one frame of a reply in progress reaches the chat: a draft, or an edit of one message.

A frame is rendered like the final message (`render`, the same `Formatting`), so the text does
not change its look when the draft becomes the answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import Message, MessageEntity

from luka_bot.services.message_text import Rendered, split_rendered
from luka_bot.services.rendering import Formatting, recent_blocks

from .capabilities import PreviewMode

PLACEHOLDER = Rendered("…")
Render = Callable[[str], Rendered]


def visible_tail(rendered: Rendered) -> Rendered:
    """What fits in one message: the text, or its last chunk as the final split will send it."""
    return split_rendered(rendered)[-1] if rendered.text else rendered


def frame_of(text: str, render: Render) -> Rendered:
    """The frame for the reply so far: its last message's worth, rendered."""
    return visible_tail(render(recent_blocks(text)))


class Frames(Protocol):
    mode: PreviewMode

    async def send(self, text: str) -> None:
        """Show `text` (the whole reply so far; "" = starting over). Telegram errors propagate."""

    async def finish(self, chunks: list[Rendered]) -> list[Rendered]:
        """Take over as much of the final message as this preview can; return the chunks left to send.

        Raises Telegram's error when it can't (then `discard()` and send every chunk).
        """

    async def discard(self) -> None:
        """Leave nothing of this preview in the chat (it was replaced by another mode)."""


class DraftFrames:
    """`sendMessageDraft`, one `draft_id` per reply: animated, ephemeral, with a Stop button."""

    mode = PreviewMode.DRAFT

    def __init__(self, bot: Bot, chat_id: int, draft_id: int, thread_id: int | None = None, *,
                 render: Render = Rendered, formatting: Formatting | None = None):
        self.bot = bot
        self.chat_id = chat_id
        self.draft_id = draft_id
        self.thread_id = thread_id
        self.render = render
        self.formatting = formatting or Formatting()

    async def send(self, text: str) -> None:
        # "" shows Telegram's "Thinking…" placeholder: a restarted reply starts from it.
        await self.formatting.send(self._draft, frame_of(text, self.render) if text.strip() else Rendered(""))

    async def _draft(self, text: str, entities: list[MessageEntity] | None) -> None:
        await self.bot.send_message_draft(chat_id=self.chat_id, draft_id=self.draft_id, text=text, entities=entities,
                                          message_thread_id=self.thread_id, parse_mode=None, can_stop=True)

    async def finish(self, chunks: list[Rendered]) -> list[Rendered]:
        return chunks  # a draft is never the message: the final one is sent and replaces it

    async def discard(self) -> None:
        return None  # ephemeral: it disappears by itself


class EditFrames:
    """One message sent at the first frame, then edited (`editMessageText`); it becomes the answer."""

    mode = PreviewMode.EDIT

    def __init__(self, bot: Bot, chat_id: int, thread_id: int | None = None, *,
                 render: Render = Rendered, formatting: Formatting | None = None):
        self.bot = bot
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.render = render
        self.formatting = formatting or Formatting()
        self.message_id: int | None = None

    async def send(self, text: str) -> None:
        frame = frame_of(text, self.render) if text.strip() else PLACEHOLDER
        if self.message_id is None:
            if text.strip():
                sent = await self.formatting.send(self._first, frame)
                self.message_id = sent.message_id
            return
        await self._edit(frame)

    async def _first(self, text: str, entities: list[MessageEntity] | None) -> Message:
        return await self.bot.send_message(self.chat_id, text, entities=entities, parse_mode=None,
                                           message_thread_id=self.thread_id)

    async def finish(self, chunks: list[Rendered]) -> list[Rendered]:
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

    async def _edit(self, frame: Rendered) -> None:
        try:
            await self.formatting.send(self._edit_text, frame)
        except TelegramBadRequest as error:
            if "message is not modified" not in error.message:
                raise

    async def _edit_text(self, text: str, entities: list[MessageEntity] | None) -> None:
        await self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self.message_id, entities=entities,
                                         parse_mode=None)
