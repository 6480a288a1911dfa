"""The session middleware every Bot API call of the bot goes through: sends into chats are paced.

- A send that must be delivered (an answer, a command reply, an admin alert, a thread name)
  waits for its turn (`SendPacer.wait_turn`); a 429 pauses what it hit (`FloodPauses`) and the
  send is retried until it is delivered or `deadline` seconds have passed since it was asked
  for. Given up: one ERROR line with the chat id, and `SendNotDelivered` for the caller (the
  dispatcher's error handler, `ignore_undelivered`, keeps it out of the log as a traceback).
- A frame (a draft, a streaming edit) goes only from spare budget; otherwise it is not sent and
  the caller gets `FrameSkipped` (a `TelegramRetryAfter`: the preview shows the next frame
  later). A frame's own 429 is raised to the preview, never retried.
- `sendChatAction` ("typing…") is not a message (the Bot FAQ's limits are about messages):
  it takes no budget, so every user of a burst sees "typing…" at once; during a flood pause it
  is not sent. `answerCallbackQuery` has no chat and must answer within seconds: not paced.
- Everything else (reads, deletions, commands) goes straight through, counted.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendChatAction, TelegramMethod

from .budget import ChatId, Clock
from .pacer import SendPacer, TooLate
from .priority import Priority, priority_of

logger = logging.getLogger("luka_bot")

DEFAULT_DEADLINE = 300.0
_SENDS = ("Send", "Copy", "Forward", "EditMessage", "EditEphemeral")


class FrameSkipped(TelegramRetryAfter):
    """A frame was not sent: the budget is kept for answers. Show the next one after `retry_after` s."""


class SendNotDelivered(TelegramRetryAfter):
    """A send that must be delivered could not be within the deadline (already logged at ERROR)."""


class SendMetrics(Protocol):
    def request(self, method: str, outcome: str) -> None: ...
    def flood(self, scope: str) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def waiting(self, change: int) -> None: ...


class NoMetrics:
    def request(self, method: str, outcome: str) -> None: ...
    def flood(self, scope: str) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def waiting(self, change: int) -> None: ...


def sends_into_chat(method: TelegramMethod[Any]) -> bool:
    """Whether `method` puts or changes a message in a chat (what Telegram's flood control counts)."""
    name = type(method).__name__
    return name.startswith(_SENDS) and not isinstance(method, SendChatAction)


def chat_of(method: TelegramMethod[Any]) -> ChatId | None:
    chat = getattr(method, "chat_id", None)
    return chat if isinstance(chat, int | str) else None


class PacedSends(BaseRequestMiddleware):
    def __init__(self, pacer: SendPacer, *, deadline: float = DEFAULT_DEADLINE, clock: Clock = time.time):
        self.pacer = pacer
        self.deadline = deadline
        self.clock = clock
        self.metrics: SendMetrics = NoMetrics()

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Any:
        if isinstance(method, SendChatAction):
            if self.pacer.pauses.local(chat_of(method)):
                self.metrics.request("SendChatAction", "skipped")
                return True  # "typing…" is cosmetic: not during a flood pause
            return await self._send(make_request, bot, method)
        if not sends_into_chat(method):
            return await self._send(make_request, bot, method)
        priority = priority_of(method)
        if priority is Priority.FRAME:
            return await self._frame(make_request, bot, method)
        return await self._deliver(make_request, bot, method, priority)

    async def _send(self, make_request: NextRequestMiddlewareType[Any], bot: Bot, method: TelegramMethod[Any]) -> Any:
        name = type(method).__name__
        try:
            result = await make_request(bot, method)
        except TelegramRetryAfter:
            self.metrics.request(name, "flood")
            raise
        except Exception:
            self.metrics.request(name, "error")
            raise
        self.metrics.request(name, "ok")
        return result

    async def _frame(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                     method: TelegramMethod[Any]) -> Any:
        chat = chat_of(method)
        if wait := await self.pacer.spare(chat):
            self.metrics.request(type(method).__name__, "skipped")
            raise FrameSkipped(method, "kept for answers", wait)  # type: ignore[arg-type] # seconds, not whole
        try:
            return await self._send(make_request, bot, method)
        except TelegramRetryAfter as error:
            await self._flooded(chat, error, method, frame=True)
            raise

    async def _deliver(self, make_request: NextRequestMiddlewareType[Any], bot: Bot, method: TelegramMethod[Any],
                       priority: Priority) -> Any:
        chat = chat_of(method)
        asked = self.clock()
        deadline = asked + self.deadline
        while True:
            self.metrics.waiting(+1)
            try:
                await self.pacer.wait_turn(chat, priority, deadline)
            except TooLate:
                raise self._give_up(method, chat, "its turn would come later") from None
            finally:
                self.metrics.waiting(-1)
            started = self.clock()
            try:
                result = await self._send(make_request, bot, method)
            except TelegramRetryAfter as error:
                await self._flooded(chat, error, method)
                if self.clock() + error.retry_after > deadline:
                    raise self._give_up(method, chat, f"retry after {error.retry_after}s") from None
                continue
            self.metrics.waited(started - asked)
            self.pacer.pauses.delivered()
            return result

    async def _flooded(self, chat: ChatId | None, error: TelegramRetryAfter, method: TelegramMethod[Any], *,
                       frame: bool = False) -> None:
        self.metrics.flood(await self.pacer.pauses.flooded(chat, error.retry_after, type(method).__name__, frame=frame))

    def _give_up(self, method: TelegramMethod[Any], chat: ChatId | None, why: str) -> SendNotDelivered:
        name = type(method).__name__
        self.metrics.request(name, "undelivered")
        self.pacer.pauses.undelivered += 1
        logger.error("❌ Telegram flood control: %s to chat %s not delivered within %.0fs (%s); given up",
                     name, chat, self.deadline, why)
        return SendNotDelivered(method, why, 0)
