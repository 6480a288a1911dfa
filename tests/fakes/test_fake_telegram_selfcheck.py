"""Self-check: a real aiogram Bot + Dispatcher against the fake Telegram Bot API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import Command
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    CallbackQuery,
    ChatMemberAdministrator,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from tests.fakes.fake_telegram import NOT_MODIFIED, Call, FakeTelegram

pytestmark = pytest.mark.asyncio

KEYBOARD = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Tap", callback_data="tap")]])
GROUP_ID = -1001234567890


def make_bot(fake: FakeTelegram, token: str | None = None) -> Bot:
    """A real aiogram Bot whose session talks to the fake."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake.url))
    return Bot(token or fake.token, session=session)


def build_router(events: list[tuple[str, Any]]) -> Router:
    """Tiny bot: echo, a keyboard that edits on tap, deletions, a 429-aware sender."""
    router = Router()

    @router.message(Command("menu"))
    async def menu(message: Message) -> None:
        await message.answer("Menu", reply_markup=KEYBOARD)

    @router.message(Command("tidy"))
    async def tidy(message: Message, bot: Bot) -> None:
        await message.delete()
        notice = await message.answer("temporary")
        await notice.delete()
        try:
            await bot.delete_message(message.chat.id, 424242)
        except TelegramBadRequest as error:
            events.append(("delete-missing", error.message))
        await message.answer("tidied")

    @router.message(Command("burst"))
    async def burst(message: Message) -> None:
        try:
            await message.answer("first try")
        except TelegramRetryAfter as error:
            events.append(("retry-after", error.retry_after))
        await message.answer("recovered")

    @router.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}")

    @router.callback_query(F.data == "tap")
    async def tap(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.message.edit_text("<b>Tapped</b>", parse_mode="HTML", reply_markup=KEYBOARD)
        try:
            await query.message.edit_text("<b>Tapped</b>", parse_mode="HTML", reply_markup=KEYBOARD)
        except TelegramBadRequest as error:
            events.append(("edit-again", error.message))
        await query.answer("done")

    return router


@dataclass
class Polling:
    fake: FakeTelegram
    bot: Bot
    events: list[tuple[str, Any]] = field(default_factory=list)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest_asyncio.fixture
async def polling(fake: FakeTelegram) -> AsyncIterator[Polling]:
    """The tiny bot long-polling the fake in this event loop."""
    harness = Polling(fake, make_bot(fake))
    dispatcher = Dispatcher()
    dispatcher.include_router(build_router(harness.events))
    task = asyncio.create_task(dispatcher.start_polling(harness.bot, handle_signals=False, polling_timeout=1))
    await fake.wait_polling(timeout=5)
    yield harness
    await dispatcher.stop_polling()
    await task
    await harness.bot.session.close()


def text_is(text: str) -> Callable[[Call], bool]:
    """A ``wait_for`` predicate: the call's text param equals ``text``."""
    return lambda call: call.params.get("text") == text


async def test_get_me_and_echo(polling: Polling) -> None:
    fake = polling.fake
    assert fake.calls_of("getMe")[0].ok
    me = await polling.bot.get_me()
    assert (me.id, me.username) == (fake.bot_id, fake.bot_username)
    assert fake.calls_of("getUpdates")[0].params["allowed_updates"] == ["callback_query", "message"]

    sent = fake.send_message("hello 123", user_id=42, first_name="Ann")
    call = await fake.wait_for("sendMessage", text_is("echo: hello 123"), timeout=5)

    assert call.params["chat_id"] == 42 and call.ok
    assert call.result["chat"]["id"] == 42 and call.result["from"]["is_bot"]
    assert fake.sent_messages(42)[-1]["text"] == "echo: hello 123"
    assert fake.sent_messages(42)[-1]["message_id"] == sent["message_id"] + 1


async def test_button_press_edits_and_not_modified(polling: Polling) -> None:
    fake = polling.fake
    fake.send_message("/menu")
    menu = (await fake.wait_for("sendMessage", text_is("Menu"), timeout=5)).result
    assert menu["reply_markup"] == KEYBOARD.model_dump(exclude_none=True)
    with pytest.raises(ValueError, match="not among"):
        fake.press_button("nope", message=menu)

    query = fake.press_button("tap", message=menu)
    await fake.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query["id"], timeout=5)

    first, second = fake.calls_of("editMessageText")
    assert first.ok and first.params["parse_mode"] == "HTML"
    assert first.params["reply_markup"] == {"inline_keyboard": [[{"text": "Tap", "callback_data": "tap"}]]}
    assert second.error == {"ok": False, "error_code": 400, "description": NOT_MODIFIED}
    assert polling.events == [("edit-again", NOT_MODIFIED)]
    edited = fake.sent_messages()[-1]
    assert edited["text"] == "Tapped" and edited["entities"] == [{"type": "bold", "offset": 0, "length": 6}]
    assert "edit_date" in edited


async def test_retry_after_reaches_the_handler(polling: Polling) -> None:
    fake = polling.fake
    fake.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 1", retry_after=1)
    fake.send_message("/burst")
    await fake.wait_for("sendMessage", text_is("recovered"), timeout=5)

    assert polling.events == [("retry-after", 1)]
    failed = fake.calls_of("sendMessage")[0]
    assert failed.error == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    assert [m["text"] for m in fake.sent_messages()] == ["recovered"]


async def test_deletions(polling: Polling) -> None:
    fake = polling.fake
    command = fake.send_message("/tidy")
    await fake.wait_for("sendMessage", text_is("tidied"), timeout=5)

    assert fake.is_deleted(1001, command["message_id"])
    assert [m["text"] for m in fake.sent_messages(include_deleted=True)] == ["temporary", "tidied"]
    assert [m["text"] for m in fake.sent_messages()] == ["tidied"]
    assert polling.events == [("delete-missing", "Bad Request: message to delete not found")]


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    async with make_bot(fake, token="654321:WRONG-token") as bot:
        with pytest.raises(TelegramUnauthorizedError):
            await bot.get_me()
    assert fake.calls[-1].error == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_long_poll_offsets_and_allowed_updates(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        started = time.monotonic()
        assert await bot.get_updates(timeout=1) == []
        assert time.monotonic() - started >= 0.9

        asyncio.get_running_loop().call_later(0.2, fake.send_message, "late")
        started = time.monotonic()
        [update] = await bot.get_updates(timeout=5)
        assert time.monotonic() - started < 2 and update.message and update.message.text == "late"
        assert [u.update_id for u in await bot.get_updates()] == [update.update_id]  # not confirmed yet

        menu = await bot.send_message(1001, "Menu", reply_markup=KEYBOARD)
        fake.press_button("tap", message=menu.model_dump(by_alias=True, exclude_none=True))
        fake.send_message("kept")
        updates = await bot.get_updates(offset=update.update_id + 1, allowed_updates=["message"])
        assert [u.message.text for u in updates if u.message] == ["kept"] and len(updates) == 1
        assert [("callback_query" in u) for u in fake.dropped_updates] == [True]
        assert await bot.get_updates(offset=updates[0].update_id + 1) == []


async def test_html_chats_members_and_commands(fake: FakeTelegram) -> None:
    command = fake.send_message("/stats@luka_test_bot now", chat_id=GROUP_ID, chat_type="supergroup", user_id=7)
    assert command["entities"] == [{"type": "bot_command", "offset": 0, "length": 20}]
    assert command["chat"] == {"id": GROUP_ID, "type": "supergroup", "title": f"Test supergroup {GROUP_ID}"}

    async with make_bot(fake) as bot:
        sent = await bot.send_message(GROUP_ID, "<b>x</b> &amp; 😀 <i>y</i>", parse_mode="HTML")
        assert sent.text == "x & 😀 y"
        assert [(e.type, e.offset, e.length) for e in sent.entities or []] == [("bold", 0, 1), ("italic", 7, 1)]
        with pytest.raises(TelegramBadRequest, match='Unsupported start tag "" at byte offset 2'):
            await bot.send_message(GROUP_ID, "1 < 2", parse_mode="HTML")
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await bot.send_message(999, "hi")

        me = await bot.get_chat_member(GROUP_ID, fake.bot_id)
        assert isinstance(me, ChatMemberAdministrator) and me.can_delete_messages
        fake.chat_members[(GROUP_ID, 7)] = "creator"
        admins = await bot.get_chat_administrators(GROUP_ID)
        assert sorted(a.status for a in admins) == ["administrator", "creator"]
        assert (await bot.get_chat(GROUP_ID)).title == f"Test supergroup {GROUP_ID}"

        fake.chat_members[(GROUP_ID, fake.bot_id)] = "member"
        with pytest.raises(TelegramBadRequest, match="message can't be deleted"):
            await bot.delete_message(GROUP_ID, command["message_id"])
        fake.chat_members[(1001, fake.bot_id)] = "kicked"
        fake.add_chat(1001)
        with pytest.raises(TelegramForbiddenError, match="blocked by the user"):
            await bot.send_message(1001, "hi")

        scope = BotCommandScopeAllGroupChats()
        await bot.set_my_commands([BotCommand(command="stats", description="Stats")], scope=scope)
        assert fake.commands({"type": "all_group_chats"}) == [{"command": "stats", "description": "Stats"}]
        assert [c.command for c in await bot.get_my_commands(scope=scope)] == ["stats"]
        assert await bot.get_my_commands() == []

    with pytest.raises(TimeoutError, match="no answered sendMessage call"):
        await fake.wait_for("sendMessage", text_is("never"), timeout=0.05)


@pytest.mark.parametrize(("text", "entity", "description"), [
    ("hi", {"type": "bold", "offset": 0, "length": 3},
     "Bad Request: entity beginning at UTF-16 offset 0 ends after the end of the text at UTF-16 offset 3"),
    ("😀 hi", {"type": "bold", "offset": 0, "length": 4}, None),  # the emoji is two UTF-16 units
    ("😀 hi", {"type": "bold", "offset": 1, "length": 5},
     "Bad Request: entity beginning at UTF-16 offset 1 ends after the end of the text at UTF-16 offset 6"),
    ("😀 hi", {"type": "bold", "offset": 1, "length": 2},
     "Bad Request: entity begins in a middle of a UTF-16 symbol at byte offset 4"),
    ("😀 hi", {"type": "bold", "offset": 0, "length": 1},
     "Bad Request: entity beginning at UTF-16 offset 0 ends in a middle of a UTF-16 symbol at byte offset 4"),
    ("hi", {"type": "shiny", "offset": 0, "length": 2},
     "Bad Request: can't parse MessageEntity: Unsupported type specified"),
    ("hi", {"type": "text_link", "offset": 0, "length": 2, "url": "./docs.md"},
     "Bad Request: entity URL './docs.md' is invalid: Wrong HTTP URL"),
    ("hi", {"type": "text_link", "offset": 0, "length": 2, "url": "javascript:alert(1)"},
     "Bad Request: entity URL 'javascript:alert(1)' is invalid: Unsupported URL protocol"),
    ("hi", {"type": "text_link", "offset": 0, "length": 2, "url": "https://docs.python.org/3/"}, None),
])
async def test_explicit_entities_are_checked_against_the_utf16_text(
    fake: FakeTelegram, text: str, entity: dict[str, Any], description: str | None,
) -> None:
    fake.add_chat(1001)
    async with make_bot(fake) as bot:
        for send in (lambda e: bot.send_message(1001, text, entities=e),
                     lambda e: bot.send_message_draft(chat_id=1001, draft_id=1, text=text, entities=e)):
            if description is None:
                await send([entity])
                continue
            with pytest.raises(TelegramBadRequest) as refused:
                await send([entity])
            assert refused.value.message == description
    if description is None:
        assert fake.sent_messages(1001)[-1]["entities"] == [entity]


async def test_a_refused_method_can_answer_with_a_body_that_is_not_the_bot_apis(fake: FakeTelegram) -> None:
    fake.add_chat(1001)
    fake.refuse("sendMessageDraft", error_code=404, body="<html><body><h1>404 Not Found</h1></body></html>")
    async with make_bot(fake) as bot:
        with pytest.raises(ClientDecodeError):
            await bot.send_message_draft(chat_id=1001, draft_id=1, text="x")
        fake.accept("sendMessageDraft")
        assert await bot.send_message_draft(chat_id=1001, draft_id=1, text="x") is True
    refused, accepted = fake.calls_of("sendMessageDraft")
    assert refused.done and not refused.ok and accepted.ok
