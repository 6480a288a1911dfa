"""Webhook requests with a wrong or missing secret: 401 as before, and a rate-limited log line.

An aiohttp server on 127.0.0.1 with the bot's webhook handler; requests are real HTTP posts. The
clock of the rate limit is injected, so "a minute later" needs no waiting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiogram import Bot, Dispatcher
from aiohttp import web

from luka_bot.webhook_secret import SECRET_HEADER, RefusedRequestsLog, SecretCheckingRequestHandler
from tests.conftest import FakeClock

TOKEN = "4242:WEBHOOK-secret-test-token-not-real"
SECRET = "the-REAL-webhook-secret-123"
UPDATE = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"},
                                      "text": "hi"}}


@pytest_asyncio.fixture
async def server(clock: FakeClock) -> AsyncIterator[tuple[str, Dispatcher]]:
    dp = Dispatcher()
    bot = Bot(TOKEN)
    app = web.Application()
    SecretCheckingRequestHandler(dispatcher=dp, bot=bot, secret_token=SECRET, handle_in_background=False,
                                 refusals=RefusedRequestsLog(clock=clock)).register(app, path="/webhook")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/webhook", dp
    await runner.cleanup()
    await bot.session.close()


async def post(url: str, secret: str | None) -> int:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with aiohttp.ClientSession() as session, session.post(url, json=UPDATE, headers=headers) as response:
        return response.status


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Webhook refused" in r.getMessage()]


async def test_wrong_and_missing_secrets_are_refused_and_logged_once_a_minute(
    server: tuple[str, Dispatcher], clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    url, _ = server
    caplog.set_level(logging.INFO)

    statuses = [await post(url, "guess-1"), await post(url, None), await post(url, "guess-2")]
    assert statuses == [401, 401, 401]
    (first,) = refusal_lines(caplog)
    assert "refused 1 request(s)" in first and "wrong: 1" in first and "127.0.0.1" in first

    clock.advance(30)
    assert await post(url, "") == 401  # an empty header counts as a wrong secret
    assert len(refusal_lines(caplog)) == 1, "at most one line a minute"

    clock.advance(31)
    assert await post(url, "guess-3") == 401
    first, second = refusal_lines(caplog)
    assert "refused 4 request(s) in the last 61s" in second
    assert "missing: 1" in second and "wrong: 3" in second

    for secret in (SECRET, TOKEN, "guess-1", "guess-3"):
        assert secret not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


async def test_the_right_secret_is_served_and_not_logged(
    server: tuple[str, Dispatcher], caplog: pytest.LogCaptureFixture,
) -> None:
    url, dp = server
    seen: list[str] = []

    @dp.message()
    async def on_message(message: object) -> None:
        seen.append("message")

    assert await post(url, SECRET) == 200
    assert seen == ["message"]
    assert refusal_lines(caplog) == []
