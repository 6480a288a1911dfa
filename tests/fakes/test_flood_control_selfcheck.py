"""The fake's flood control behaves like the Telegram it models (a clock of our own, no sleeping)."""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter

from tests.conftest import FakeClock
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.flood_control import FloodControl


def test_buckets_overall_per_chat_and_per_group() -> None:
    clock = FakeClock()
    flood = FloodControl(clock=clock)
    assert [flood.check("sendMessage", {"chat_id": 1}) for _ in range(4)] == [None, None, None, 1], \
        "one chat: a burst of 3, then 429 retry after 1 s"
    clock.advance(1.0)
    assert flood.check("sendMessage", {"chat_id": 1}) is None
    assert [flood.check("sendMessageDraft", {"chat_id": c}) for c in range(100, 129)] == [None] * 29
    assert flood.check("editMessageText", {"chat_id": 200}) == 1, "30 in all, the 31st waits for the overall bucket"
    assert flood.refused_by == {"chat": 1, "overall": 1}
    clock.advance(60.0)
    group = []
    for _ in range(30):  # one a second: fine for a chat, but a group's 20 a minute run out
        group.append(flood.check("sendMessage", {"chat_id": -5}))
        clock.advance(1.0)
    assert group == [None] * 29 + [1], "a group: a burst of 20, then 20 a minute"
    assert flood.check("sendChatAction", {"chat_id": 1}) is None and flood.check("answerCallbackQuery", {}) is None
    assert flood.accepted["sendChatAction"] == 0, "not a message: never counted"


def test_flood_bot_refuses_every_chat_until_it_ends() -> None:
    clock = FakeClock()
    flood = FloodControl(clock=clock)
    flood.flood_bot(5)
    assert {flood.check("sendMessage", {"chat_id": c}) for c in (1, 2, -3)} == {5}
    clock.advance(5.0)
    assert flood.check("sendMessage", {"chat_id": 1}) is None
    assert flood.refused_by == {"bot": 3}


async def test_the_fake_answers_429_with_retry_after() -> None:
    async with FakeTelegram(flood_control=FloodControl(chat_burst=1)) as fake:
        fake.add_chat(7)
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
        try:
            await bot.send_message(7, "one")
            try:
                await bot.send_message(7, "two")
                raise AssertionError("the second message in a second should be refused")
            except TelegramRetryAfter as error:
                assert error.retry_after == 1
        finally:
            await bot.session.close()
        assert [c.ok for c in fake.calls_of("sendMessage")] == [True, False]
