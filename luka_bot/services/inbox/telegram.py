"""Where the inbox meets aiogram: the one place each delivery mode confirms, the dispatcher, late answers.

- Polling (`RecordBeforeConfirm`, a session middleware on `getUpdates`): aiogram's polling loop
  confirms a batch by asking for the next one (`offset`). The middleware records each batch as it
  arrives, before aiogram sees it, and holds the next `getUpdates` while `Inbox.ready_to_confirm`
  says so (Redis down: until the unrecorded updates are answered; a full backlog).
- Webhook (`RecordBeforeAnswering`, mixed into the request handler): records the update before
  the 200 (Redis down: the 200 waits for the answer).
- `InboxMiddleware` (outer, on `dp.update`, inside the fallback plugin's drain tracking): waits for
  the chat's turn, then for one of `limit` slots (updates handled at once), runs the handlers and
  finishes the entry. Waiting for a turn takes no slot: one user's ten messages do not hold ten
  slots while other users wait.
- `QuoteLateAnswers` (session middleware on `sendMessage`): an answer sent `after` seconds or more
  after its question was written quotes the question (a reply to it), so a user who wrote other
  things meanwhile, or whose answer comes after a restart, sees what it answers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.methods import GetUpdates, SendMessage, TelegramMethod
from aiogram.methods.base import Response
from aiogram.types import ReplyParameters, TelegramObject, Update
from aiohttp import web
from pydantic import ValidationError

from .entries import InboxEntry
from .inbox import Inbox

logger = logging.getLogger("luka_bot.inbox")


@dataclass(frozen=True)
class Question:
    chat_id: int
    message_id: int
    date: float


_QUESTION: contextvars.ContextVar[Question | None] = contextvars.ContextVar("luka_inbox_question", default=None)


class InboxMiddleware(BaseMiddleware):
    """Turn, slot, handlers, finish (module doc). `limit` 0: no bound on updates handled at once."""

    def __init__(self, inbox: Inbox, limit: int = 0):
        self.inbox = inbox
        self._slots = asyncio.Semaphore(limit) if limit else None

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        if event.message is not None:
            message = event.message
            _QUESTION.set(Question(message.chat.id, message.message_id, message.date.timestamp()))

        async def in_a_slot() -> Any:
            if self._slots is None:
                return await handler(event, data)
            async with self._slots:
                return await handler(event, data)

        return await self.inbox.handle(event, in_a_slot, UNHANDLED)


class RecordBeforeConfirm(BaseRequestMiddleware):
    """Polling: record each `getUpdates` batch before the next call confirms it (module doc)."""

    def __init__(self, inbox: Inbox):
        self.inbox = inbox

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Response[Any]:
        if not isinstance(method, GetUpdates):
            return await make_request(bot, method)
        if method.offset is not None:
            await self.inbox.ready_to_confirm(method.offset)
        updates = await make_request(bot, method)  # (the chain returns the result, whatever its annotation)
        if updates:
            await self.inbox.accept(updates)
        return updates


class QuoteLateAnswers(BaseRequestMiddleware):
    """A `sendMessage` to the question's chat, `after` s or more after the question, replies to it (0: never)."""

    def __init__(self, after: float, clock: Callable[[], float] = time.time):
        self.after = after
        self.clock = clock

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Response[Any]:
        question = _QUESTION.get()
        if (self.after and question is not None and isinstance(method, SendMessage)
                and method.chat_id == question.chat_id and method.reply_parameters is None
                and method.reply_to_message_id is None and self.clock() - question.date >= self.after):
            quote = ReplyParameters(message_id=question.message_id, allow_sending_without_reply=True)
            method = method.model_copy(update={"reply_parameters": quote})
        return await make_request(bot, method)


class Handling:
    """Feeds updates to the dispatcher in background tasks (claimed entries, webhook updates)."""

    def __init__(self, dp: Dispatcher, inbox: Inbox):
        self.dp = dp
        self.inbox = inbox
        self.bot: Bot | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self, bot: Bot, update: Update, **data: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._feed(bot, update, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def start_entry(self, entry: InboxEntry) -> None:
        """A claimed entry: parse it and feed it (an entry that does not parse is finished, with an ERROR)."""
        assert self.bot is not None, "claims start after the dispatcher's start-up"
        try:
            update = Update.model_validate_json(entry.payload, context={"bot": self.bot})
        except ValidationError as error:
            logger.error("📥 inbox entry %s is not an update (%s): dropped", entry.stream_id, error.error_count())
            self.start_finish(entry)
            return
        self.start(self.bot, update)

    def start_finish(self, entry: InboxEntry) -> None:
        task = asyncio.create_task(self.inbox.finish(entry))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _feed(self, bot: Bot, update: Update, data: dict[str, Any]) -> None:
        try:
            result = await self.dp.feed_update(bot, update, **data)
            if isinstance(result, TelegramMethod):
                await self.dp.silent_call_request(bot, result)
        except Exception:  # as aiogram's own loop: a handler's bug is logged, the bot goes on
            logger.exception("update %s failed", update.update_id)


SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class RecordBeforeAnswering:
    """Webhook (mixed in before aiogram's request handler): the update is recorded before the 200.

    Its public `handle` (the route): a request with the right secret is read, recorded, handled in
    the background, answered; any other request goes to the handler behind it (which refuses it).
    """

    inbox: Inbox
    handling: Handling
    data: dict[str, Any]

    async def handle(self, request: web.Request) -> web.Response:
        bot = await self.resolve_bot(request)  # type: ignore[attr-defined]
        if not self.verify_secret(request.headers.get(SECRET_HEADER, ""), bot):  # type: ignore[attr-defined]
            return await super().handle(request)  # type: ignore[misc]
        raw = await request.text()
        update = Update.model_validate_json(raw, context={"bot": bot})
        (outcome,) = await self.inbox.accept([update], [raw])
        self.handling.start(bot, update, **self.data)  # a duplicate is dropped by InboxMiddleware
        if isinstance(outcome, InboxEntry) and outcome.holds_confirmation:
            await self.inbox.until_answered(outcome)
        return web.json_response({}, dumps=bot.session.json_dumps)
