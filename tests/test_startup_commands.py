"""Start-up against a Bot API server that refuses `setMyCommands`: one log line, the bot serves.

The real app (`build_app`) long-polls the fake Bot API on 127.0.0.1 in process. The command
menu is a convenience: a server without the method (404), a scope Telegram refuses (400, e.g.
an admin who never opened the bot) or flood control must not stop the bot at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from luka_bot.core.config import load_settings
from luka_bot.core.loader import App, build_app
from luka_bot.services.llm_provider_fallback import set_llm_provider_fallback
from tests.fakes.fake_telegram import Call, FakeTelegram

TOKEN = "777:STARTUP-token-not-real"
ADMIN = 5001
USER = 1001


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server


async def _run_until_start_is_answered(fake: FakeTelegram) -> tuple[App, Call]:
    settings = load_settings(_env_file=None, BOT_TOKEN=TOKEN, ADMIN_IDS=[ADMIN], REDIS_URL=None,
                             TELEGRAM_API_URL=fake.url, OLLAMA_URL="http://127.0.0.1:9",
                             AVAILABLE_PROVIDERS={"ollama": ["m1"]}, DEFAULT_LANGUAGE="en")
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
    app = build_app(settings, bot=bot)
    polling = asyncio.create_task(app.dp.start_polling(bot, handle_signals=False, close_bot_session=True))
    try:
        await fake.wait_polling()
        mark = fake.mark()
        fake.send_message("/start", user_id=USER)
        reply = await fake.wait_for("sendMessage", after=mark)
    finally:
        if not polling.done():
            await app.dp.stop_polling()
        await asyncio.wait_for(polling, 10)
        set_llm_provider_fallback(None)
    return app, reply


def _menu_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "command menu" in r.getMessage()]


@pytest.mark.parametrize(("code", "description"), [
    (404, "Not Found: method not found"),
    (400, "Bad Request: chat not found"),
])
async def test_set_my_commands_refused_is_one_log_line_and_the_bot_serves(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture, code: int, description: str,
) -> None:
    fake.fail_next("setMyCommands", error_code=code, description=description, times=1000)
    caplog.set_level(logging.INFO)

    _, reply = await _run_until_start_is_answered(fake)

    assert reply.ok and reply.params["text"].startswith("👋 Hi! I'm Luka.")
    (line,) = _menu_lines(caplog)
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert description in line.getMessage()
    assert TOKEN not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


async def test_one_refused_admin_scope_does_not_stop_the_other_menus(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the first call fails (the default scope, all languages): every other menu is still set."""
    fake.fail_next("setMyCommands", error_code=400, description="Bad Request: BOT_COMMANDS_TOO_MUCH")

    await _run_until_start_is_answered(fake)

    calls = fake.calls_of("setMyCommands")
    assert [c.ok for c in calls].count(False) == 1
    assert any(c.ok and c.params["scope"]["type"] == "chat" and c.params.get("language_code") is None
               for c in calls), "the admin's menu is set although the default one was refused"
    assert "1 call(s) refused" in _menu_lines(caplog)[0].getMessage()
