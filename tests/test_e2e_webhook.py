"""End to end in webhook mode: the real bot process receives updates over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from luka_bot.core.config import Settings
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


async def _wait_listening(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(1200):  # up to 60 s: start-up imports are slow on a loaded 2-core machine
        if process.returncode is not None:
            raise AssertionError("the bot exited:\n" + log.read_text(errors="replace")[-3000:])
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                if response.status in (404, 405):  # the route only takes POST: the server is up
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the webhook server did not come up:\n" + log.read_text(errors="replace")[-3000:])


async def test_webhook_mode_answers_updates_and_refuses_unsigned_ones(tmp_path: Path) -> None:
    fake = await FakeTelegram(token=TOKEN).start()
    primary = await FakeLLM("ollama").start()
    port = free_port()
    log_path = tmp_path / "bot.log"
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env.update(BOT_TOKEN=TOKEN, TELEGRAM_API_URL=fake.url, OLLAMA_URL=primary.url,
               AVAILABLE_PROVIDERS='{"ollama": ["m1"]}', WEBHOOK_URL=f"http://127.0.0.1:{port}",
               WEBHOOK_HOST="127.0.0.1", WEBHOOK_PORT=str(port), WEBHOOK_SECRET=SECRET, PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "luka_bot", cwd=tmp_path, env=env,
                                                       stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
    hook = f"http://127.0.0.1:{port}/webhook"
    try:
        await _wait_listening(hook, process, log_path)
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
        if process.returncode is None:
            process.kill()
            await process.wait()
        await primary.stop()
        await fake.stop()
    log = log_path.read_text(errors="replace")
    assert SECRET not in log and TOKEN not in log
    assert "🌐 Webhook set" in log


@pytest.mark.parametrize(("name", "value"), [("WEBHOOK_URL", "ftp://x"), ("WEBHOOK_PATH", "hook"),
                                             ("WEBHOOK_PORT", "70000")])
def test_bad_webhook_settings_name_the_setting(name: str, value: str) -> None:
    from luka_bot.core.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=name):
        load_settings(**{name: value})
