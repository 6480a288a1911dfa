"""Streamed replies: the chat handler's answer appears while it is generated.

- `ReplyStreaming` (one per bot, injected by the dispatcher as `reply_streaming`): settings,
  what the Bot API server accepts (`StreamCapabilities`), the replies in progress
  (`Generations`, where a Stop finds its run);
- a reply: `reply_streaming.reply(bot, message)` → `StreamedReply` (drafts or edits,
  restarted after a cut, stoppable), or `PlainReply` when STREAMING=off;
- `TypingAction`: "typing…" that never leaks a failed background task.

Model text is rendered (`render_markdown`; its frames with `render_draft`, which closes the
markup the stream left open; plain when MARKDOWN=off) the same way in the frames and in the
final messages; texts of the bot's own (`Rendered`) go as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiogram import Bot
from aiogram.exceptions import ClientDecodeError, TelegramAPIError
from aiogram.types import Chat, Message, MessageEntity
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage

from luka_bot.services.bot_store import BotStore
from luka_bot.services.message_text import Rendered, split_rendered
from luka_bot.services.rendering import Formatting, render_draft, render_markdown

from .capabilities import FrameError, PreviewMode, StreamCapabilities, is_refusal
from .frames import DraftFrames, EditFrames, Frames, Render
from .generations import Generations
from .preview import Preview
from .reply import AnswerCutOff, ReplyStopped, SideEffectsRan, background, finished, stream_reply
from .typing_action import TypingAction

__all__ = ["AnswerCutOff", "Generations", "PlainReply", "PreviewMode", "ReplyStopped", "ReplyStreaming", "SideEffectsRan",
           "StreamCapabilities", "StreamedReply", "TypingAction"]

EDIT_INTERVAL_FACTOR = 3
MIN_EDIT_INTERVAL = 3.0
"""Edits are throttled harder: Telegram allows a group ~20 messages a minute, i.e. one every 3 s."""


async def _answer(message: Message, chunks: Sequence[Rendered], formatting: Formatting) -> None:
    async def send(text: str, entities: list[MessageEntity] | None) -> Message:
        return await message.answer(text, entities=entities, parse_mode=None)

    for chunk in chunks:
        await formatting.send(send, chunk)


class PlainReply:
    """STREAMING=off: one `agent.run`, then the answer in as many messages as it takes."""

    def __init__(self, render: Render = render_markdown):
        self.render = render

    async def generate(self, agent: Agent[Any, str], prompt: str, history: Sequence[ModelMessage], *,
                       attempts: int, has_side_effects: Callable[[str], bool]) -> str:
        result = await agent.run(prompt, message_history=list(history))
        return finished(result.response, result.output)

    async def deliver(self, message: Message, text: str | Rendered) -> None:
        """The model's `text` (Markdown), or a text of the bot's own (`Rendered`), as messages."""
        rendered = text if isinstance(text, Rendered) else self.render(text)
        await _answer(message, split_rendered(rendered), Formatting())


class StreamedReply:
    """One reply shown while it is generated (drafts, or edits of one message), then sent in full."""

    def __init__(self, streaming: ReplyStreaming, bot: Bot, question: Message):
        self.streaming = streaming
        self.chat = question.chat
        self.draft_id = question.message_id  # unique in the chat, the same in every replica
        self.thread_id = question.message_thread_id if question.is_topic_message else None
        self.formatting = Formatting()  # one per reply: its frames and its final messages look alike
        frames = streaming.frames_for(bot, self.chat, self.draft_id, self.thread_id, self.formatting)
        interval = streaming.interval
        if frames is not None and frames.mode is PreviewMode.EDIT:
            interval = max(interval * EDIT_INTERVAL_FACTOR, MIN_EDIT_INTERVAL)
        self.preview = Preview(frames, interval, on_refused=self._refused)
        self.bot = bot
        self.frames: Frames | None = frames
        self._replaced: list[Frames] = []

    def _refused(self, frames: Frames, error: FrameError) -> Frames | None:
        self._replaced.append(frames)
        mode = self.streaming.capabilities.refused(self.chat.type, frames.mode, error)
        if mode is PreviewMode.EDIT:
            self.preview.interval = max(self.preview.interval * EDIT_INTERVAL_FACTOR, MIN_EDIT_INTERVAL)
        return self.streaming.frames_for(self.bot, self.chat, self.draft_id, self.thread_id, self.formatting)

    async def generate(self, agent: Agent[Any, str], prompt: str, history: Sequence[ModelMessage], *,
                       attempts: int, has_side_effects: Callable[[str], bool]) -> str:
        generations = self.streaming.generations
        try:
            with generations.running(self.chat.id, self.draft_id) as token:
                async with background(generations.watch(self.chat.id, self.draft_id, token,
                                                        max(self.streaming.interval, 1.0))):
                    return await stream_reply(agent, prompt, history, self.preview, token=token,
                                              attempts=attempts, has_side_effects=has_side_effects)
        finally:
            self.frames = await self.preview.close()

    async def deliver(self, message: Message, text: str | Rendered) -> None:
        """The model's `text` (Markdown, rendered like its frames), or a text of the bot's own (`Rendered`)."""
        self.frames = await self.preview.close()
        for replaced in self._replaced:
            await replaced.discard()
        chunks = split_rendered(text if isinstance(text, Rendered) else self.streaming.render(text))
        if self.frames is not None:
            try:
                chunks = await self.frames.finish(chunks)
            except (TelegramAPIError, ClientDecodeError) as error:  # the preview can't become the answer
                if is_refusal(error):
                    self.streaming.capabilities.refused(self.chat.type, self.frames.mode, error)
                await self.frames.discard()
        await _answer(message, chunks, self.formatting)


class ReplyStreaming:
    def __init__(self, *, enabled: bool = True, interval: float = 1.0, store: BotStore | None = None,
                 markdown: bool = True):
        self.enabled = enabled
        self.interval = interval
        self.render: Render = render_markdown if markdown else Rendered
        self.render_draft: Render = render_draft if markdown else Rendered
        """A reply still being written (its frames, a stopped reply's partial text)."""
        self.capabilities = StreamCapabilities()
        self.generations = Generations(store)

    def frames_for(self, bot: Bot, chat: Chat, draft_id: int, thread_id: int | None = None,
                   formatting: Formatting | None = None) -> Frames | None:
        mode = self.capabilities.mode_for(chat.type)
        if mode is PreviewMode.DRAFT:
            return DraftFrames(bot, chat.id, draft_id, thread_id, render=self.render_draft, formatting=formatting)
        if mode is PreviewMode.EDIT:
            return EditFrames(bot, chat.id, thread_id, render=self.render_draft, formatting=formatting)
        return None

    @contextlib.asynccontextmanager
    async def reply(self, bot: Bot, question: Message) -> AsyncIterator[StreamedReply | PlainReply]:
        """The reply to the user's `question`: streamed (one draft per question), or plain when off."""
        if not self.enabled:
            yield PlainReply(self.render)
            return
        reply = StreamedReply(self, bot, question)
        try:
            yield reply
        finally:
            await reply.preview.close()
