"""End to end in webhook mode: the real bot process receives updates over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.bot_process import BotProcess, bot_env
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.redis_server import free_port

TOKEN = "123456:TEST-webhook-token-not-real-abcdefghij"
SECRET = "webhook-SECRET-0123456789"
USER = 2002


async def _post(url: str, update: dict, secret: str | None) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    async with aiohttp.ClientSession() as session, session.post(url, json=update, headers=headers) as response:
        return response.status


async def test_webhook_mode_answers_updates_and_refuses_unsigned_ones(tmp_path: Path) -> None:
    fake = await FakeTelegram(token=TOKEN).start()
    primary = await FakeLLM("ollama").start()
    port = free_port()
    env = bot_env(fake, primary, WEBHOOK_URL=f"http://127.0.0.1:{port}", WEBHOOK_HOST="127.0.0.1",
                  WEBHOOK_PORT=port, WEBHOOK_SECRET=SECRET)
    bot = await BotProcess.start(env, tmp_path)
    process = bot.process
    hook = f"http://127.0.0.1:{port}/webhook"
    try:
        await bot.wait_listening(hook, timeout=60)  # start-up imports are slow on a loaded 2-core machine
        registered = await fake.wait_for("setWebhook", timeout=20)
        assert registered.params["url"] == hook
        assert registered.params["secret_token"] == SECRET
        assert "polling" not in {c.method for c in fake.calls} and not fake.calls_of("getUpdates")

        forged = fake.send_message("hello?", user_id=USER)
        mark = fake.mark()
        assert await _post(hook, {"update_id": 1, "message": forged}, secret=None) == 401
        assert await _post(hook, {"update_id": 2, "message": forged}, secret="wrong") == 401

        message = fake.send_message("hello, bot", user_id=USER)
        assert await _post(hook, {"update_id": 3, "message": message}, secret=SECRET) == 200
        reply = await fake.wait_for("sendMessage", lambda c: c.params.get("chat_id") == USER
                                    and c.params.get("text") == "answer from ollama", after=mark, timeout=20)
        assert reply.ok
        sent = [c.params["text"] for c in fake.calls[mark:] if c.method == "sendMessage"]
        assert sent == ["🧵 answer from ollama", "answer from ollama"]  # the unsigned updates got nothing
        assert primary.count() == 2  # the reply and the thread name; nothing for the refused updates

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        await bot.stop()
        await primary.stop()
        await fake.stop()
    log = bot.log()
    assert SECRET not in log and TOKEN not in log
    assert "🌐 Webhook set" in log


@pytest.mark.parametrize(("name", "value"), [("WEBHOOK_URL", "ftp://x"), ("WEBHOOK_PATH", "hook"),
                                             ("WEBHOOK_PORT", "70000")])
def test_bad_webhook_settings_name_the_setting(name: str, value: str) -> None:
    from luka_bot.core.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=name):
        load_settings(**{name: value})
