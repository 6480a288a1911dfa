"""`luka-bot console`: chat with the bot in a terminal, without Telegram.

The bot is built exactly as `luka-bot run` builds it (dispatcher, middleware, handlers, i18n,
the fallback service and its store); only the Bot API is replaced: `ConsoleSession` is an
aiogram session that prints what the bot sends (sendMessage, editMessageText, callback
notices, alerts) and answers with the objects Telegram would return. Each line read from
stdin becomes a private-chat message from the local user, who is an admin; `#N` presses
button N of the last message that had buttons.

A reply is tagged with the provider that answered the LLM request behind it:
`luka (openai): …`; replies that needed no LLM, and alerts, are plain `luka: …`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from aiogram import Bot, Dispatcher, methods
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import TelegramMethod
from aiogram.types import CallbackQuery, Chat, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User

from luka_bot.core.config import Settings
from luka_bot.core.loader import build_app
from luka_bot.core.logging_setup import setup_logging
from plugins.llm_fallback import AttemptEvent, LLMProviderFallback

logger = logging.getLogger(__name__)

CONSOLE_TOKEN = "0:console"
"""Never sent anywhere: the console session answers every Bot API call itself."""
DEFAULT_USER_ID = 1

# Calls that only matter on Telegram: answered with success, nothing shown.
SILENT = (methods.SendChatAction, methods.SetMyCommands, methods.DeleteMyCommands, methods.SetChatMenuButton,
          methods.DeleteMessage, methods.DeleteMessages, methods.SetMessageReaction)


class ConsoleSession(BaseSession):
    """A Bot API that is a terminal: what the bot sends is printed to `out`."""

    def __init__(self, user: User, out: TextIO = sys.stdout):
        super().__init__()
        self.user = user
        self.out = out
        self.me = User(id=0, is_bot=True, first_name="Luka", username="luka_console_bot")
        self.providers: list[str] = []
        """Providers that answered during the update being handled (the last one tags a reply)."""
        self.handling: asyncio.Task[Any] | None = None
        """The task handling the current update: only its replies get a tag (alerts come from elsewhere)."""
        self.buttons: list[tuple[Message, InlineKeyboardButton]] = []
        self._ids = itertools.count(1)

    # -- what the bot sends

    async def make_request(self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None) -> Any:
        if isinstance(method, methods.GetMe):
            return self.me
        if isinstance(method, methods.SendMessage):
            message = self._message(bot, method.chat_id, method.text, method.reply_markup)
            self._show(method.text, method.reply_markup, message)
            return message
        if isinstance(method, methods.EditMessageText):
            message = self._message(bot, method.chat_id or self.user.id, method.text, method.reply_markup,
                                    message_id=method.message_id)
            self._show(method.text, method.reply_markup, message, edited=True)
            return message
        if isinstance(method, methods.AnswerCallbackQuery):
            if method.text:
                self._print(f"luka (notice): {method.text}")
            return True
        if isinstance(method, SILENT):
            return True
        raise TelegramBadRequest(method, f"{type(method).__name__} is not available in the console")

    async def stream_content(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - no files here
        raise NotImplementedError("the console does not download files")
        yield b""

    async def close(self) -> None:
        pass

    def _message(self, bot: Bot, chat_id: Any, text: str, markup: Any, message_id: int | None = None) -> Message:
        return Message(
            message_id=message_id or next(self._ids), date=datetime.now(UTC),
            chat=Chat(id=int(chat_id), type="private", first_name=self.user.first_name),
            from_user=self.me, text=text, reply_markup=markup if isinstance(markup, InlineKeyboardMarkup) else None,
        ).as_(bot)

    def _show(self, text: str, markup: Any, message: Message, *, edited: bool = False) -> None:
        replying = self.handling is not None and asyncio.current_task() is self.handling
        tag = f" ({self.providers[-1]})" if self.providers and replying else ""
        first, *rest = text.splitlines() or [""]
        lines = [f"luka{tag}{' (edited)' if edited else ''}: {first}", *(f"  {line}" for line in rest)]
        if isinstance(markup, InlineKeyboardMarkup):
            self.buttons = []
            for row in markup.inline_keyboard:
                cells = []
                for button in row:
                    self.buttons.append((message, button))
                    cells.append(f"[#{len(self.buttons)} {button.text}]")
                lines.append("  " + " ".join(cells))
        self._print("\n".join(lines))

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- which provider answered

    def watch(self, fallback: LLMProviderFallback) -> None:
        """Learn which provider answers each LLM request."""
        fallback.add_listener(self._on_event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, AttemptEvent) and event.outcome == "ok" and (
                not self.providers or self.providers[-1] != event.provider):
            self.providers.append(event.provider)


class Console:
    """Reads the local user's lines, feeds them to the dispatcher as updates, one at a time."""

    def __init__(self, dp: Dispatcher, bot: Bot, session: ConsoleSession, language: str):
        self.dp = dp
        self.bot = bot
        self.session = session
        self.user = session.user
        self.language = language
        self._update_ids = itertools.count(1)

    def update_for(self, line: str) -> Update | None:
        update_id = next(self._update_ids)
        user = self.user
        chat = Chat(id=user.id, type="private", first_name=user.first_name)
        if line.startswith("#") and line[1:].strip().isdigit():
            index = int(line[1:].strip())
            if not 1 <= index <= len(self.session.buttons):
                print(f"(no button #{index}: the last message has {len(self.session.buttons)})", file=sys.stderr)
                return None
            message, button = self.session.buttons[index - 1]
            query = CallbackQuery(id=str(update_id), from_user=user, chat_instance="console", message=message,
                                  data=button.callback_data)
            return Update(update_id=update_id, callback_query=query)
        message = Message(message_id=10_000_000 + update_id, date=datetime.now(UTC), chat=chat, from_user=user,
                          text=line)
        return Update(update_id=update_id, message=message)

    async def handle(self, line: str) -> None:
        update = self.update_for(line)
        if update is None:
            return
        self.session.providers.clear()
        self.session.handling = asyncio.create_task(self.dp.feed_update(self.bot, update))
        try:
            await self.session.handling
        except Exception:
            logger.exception("the update failed")
        finally:
            self.session.handling = None

    async def run(self, lines: TextIO = sys.stdin) -> None:
        """Handle each line until end of input (Ctrl-D). A daemon thread reads, so Ctrl-C never waits for it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            for line in iter(lines.readline, ""):
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        while (line := await queue.get()) is not None:
            if line.strip():
                await self.handle(line.strip())


async def run_console(settings: Settings, *, lang: str | None = None, user_id: int | None = None) -> None:
    setup_logging("DEBUG" if settings.LOG_LEVEL == "DEBUG" else "WARNING", settings.secret_values())
    user_id = user_id or (settings.ADMIN_IDS[0] if settings.ADMIN_IDS else DEFAULT_USER_ID)
    language = lang or settings.DEFAULT_LANGUAGE
    settings = settings.model_copy(update={"ADMIN_IDS": [*settings.ADMIN_IDS, user_id]})
    user = User(id=user_id, is_bot=False, first_name="You", language_code=language)
    session = ConsoleSession(user)
    bot = Bot(CONSOLE_TOKEN, session=session)
    app = build_app(settings, bot=bot)
    session.watch(app.fallback)
    print(f"luka console: you are user {user_id} (admin), language {language}; #N presses button N; "
          "Ctrl-D quits.", file=sys.stderr)
    workflow = {"dispatcher": app.dp, "bots": [bot], **app.dp.workflow_data}
    await app.dp.emit_startup(bot=bot, **workflow)
    try:
        await Console(app.dp, bot, session, language).run()
    finally:
        await app.dp.emit_shutdown(bot=bot, **workflow)
        await bot.session.close()


def main(settings: Settings, *, lang: str | None = None, user_id: int | None = None) -> int:
    try:
        asyncio.run(run_console(settings, lang=lang, user_id=user_id))
    except KeyboardInterrupt:
        pass
    return 0
