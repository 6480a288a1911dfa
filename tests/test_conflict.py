"""Long polling while another process polls: one clear warning (pointing to webhook mode), no retry storm."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

from luka_bot.core.config import Settings
from luka_bot.core.polling_conflict import PollingConflictMiddleware
from tests.conftest import FakeClock, wait_until
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import CONFLICT, FakeTelegram

TOKEN = "123456:CONFLICT-token-not-real"


async def test_conflicts_give_one_warning_per_ten_minutes_and_polling_resumes(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # the pause between retries, on the fake clock
        pauses.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    fake = await FakeTelegram(token=TOKEN).start()
    fake.fail_next("getUpdates", error_code=409, description=CONFLICT, times=30)
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake.url))
    session.middleware(PollingConflictMiddleware(sleep=sleep, clock=clock))
    bot = Bot(TOKEN, session=session)
    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer("pong")

    caplog.set_level(logging.INFO)
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, close_bot_session=True))
    try:
        fake.send_message("ping")
        reply = await fake.wait_for("sendMessage", timeout=20)
        assert reply.params["text"] == "pong"
    finally:
        await dp.stop_polling()
        await polling
        await fake.stop()
    conflicts = [c for c in fake.calls_of("getUpdates") if c.error and c.error["error_code"] == 409]
    assert len(conflicts) == 30
    assert max(pauses) == 30 and pauses[:5] == [1, 2, 4, 8, 16]  # growing pauses, capped: no storm
    warnings = [r for r in caplog.records if "409 Conflict" in r.getMessage()]
    # 30 conflicts over ~13 min of (fake) pauses: the first one, and one reminder after 10 min
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert "WEBHOOK_URL" in warnings[0].getMessage() and "another process" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.name == "aiogram.dispatcher" and r.levelno >= logging.WARNING]


async def test_a_second_polling_process_gets_one_clear_line(tmp_path: Path) -> None:
    """The real bot long-polls; this test polls too (as a second process would): Telegram answers the
    bot 409. The bot says so once, keeps retrying quietly, and answers again once it is alone."""
    fake = await FakeTelegram(token=TOKEN).start()
    llm = await FakeLLM("ollama").start()
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env.update(BOT_TOKEN=TOKEN, TELEGRAM_API_URL=fake.url, OLLAMA_URL=llm.url, AVAILABLE_PROVIDERS='{"ollama": ["m1"]}',
               PYTHONUNBUFFERED="1")
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "luka_bot", cwd=tmp_path, env=env,
                                                       stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)

    def bot_polls() -> list:
        return [c for c in fake.calls_of("getUpdates") if c.params.get("timeout", 0) > 0]

    try:
        await fake.wait_polling(timeout=30)
        async with aiohttp.ClientSession() as other:
            for _ in range(3):  # the other process polls while the bot's long poll is pending
                pending = len(bot_polls())
                await wait_until(lambda: any(not c.done for c in bot_polls()), rounds=300, interval=0.05)
                async with other.post(f"{fake.url}/bot{TOKEN}/getUpdates", json={"timeout": 0}) as response:
                    assert response.status == 200
                await wait_until(lambda n=pending: len(bot_polls()) > n, rounds=400, interval=0.05)
        conflicts = [c for c in bot_polls() if c.error and c.error["error_code"] == 409]
        assert len(conflicts) == 3
        mark = fake.mark()
        fake.send_message("hello again", user_id=4242)
        await fake.wait_for("sendMessage", lambda c: c.params.get("text") == "answer from ollama", after=mark,
                            timeout=20)
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)
        await llm.stop()
        await fake.stop()
    log = log_path.read_text(errors="replace")
    assert log.count("409 Conflict") == 1, log
    assert "WEBHOOK_URL" in log
    assert "Failed to fetch updates" not in log and "Traceback" not in log, log
