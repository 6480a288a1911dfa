"""aiogram's HTTP session, for a `TELEGRAM_API_URL` that is not exactly Telegram.

- A getMe result without `is_bot` (the `telegram-test-api` emulator sends none) is read as a
  bot: getMe always describes the bot itself, and aiogram would otherwise refuse the whole
  answer and the bot could not start. Logged once, as a sign the server is not the real Bot API.
- A 502, 503 or 504 whose body is not JSON (a proxy's "Bad Gateway" page while a local Bot API
  server restarts) is a server error, retried like Telegram's own 5xx, rather than an answer
  that cannot be decoded. Any other answer that is not JSON comes from a server that is not the
  Bot API at all.

`not_the_bot_api()` words what start-up says when the server answers, but not like the Bot API.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import ClientDecodeError, TelegramServerError
from aiogram.methods import GetMe, TelegramMethod
from aiogram.methods.base import Response, TelegramType

logger = logging.getLogger("luka_bot")

TELEGRAM_URL = "https://api.telegram.org"
GATEWAY_ERRORS = (502, 503, 504)
"""A proxy's answers while the server behind it is away."""


class BotApiSession(AiohttpSession):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._told_missing_is_bot = False

    def check_response(self, bot: Bot, method: TelegramMethod[TelegramType], status_code: int,
                       content: str) -> Response[TelegramType]:
        if status_code in GATEWAY_ERRORS and _json(content) is None:
            raise TelegramServerError(method=method, message=f"HTTP {status_code}, and the body is not JSON")
        if isinstance(method, GetMe):
            content = self._assume_bot(content)
        return super().check_response(bot, method, status_code, content)

    def _assume_bot(self, content: str) -> str:
        answer = _json(content)
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict) or "is_bot" in result:
            return content
        if not self._told_missing_is_bot:
            self._told_missing_is_bot = True
            logger.warning("⚠️ The Bot API server's getMe has no is_bot (an emulator, not Telegram?); "
                           "taking it as the bot it describes")
        return json.dumps({**answer, "result": {**result, "is_bot": True}})


def _json(content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def not_the_bot_api(error: ClientDecodeError, api_url: str | None) -> str:
    """One line: the server at `api_url` answered getMe, but not as the Bot API does, and what to do."""
    data = error.data
    if isinstance(data, str):
        what = "an HTML page" if data.lstrip().startswith("<") else "a body that is not JSON"
    else:
        what = "JSON that is not a Bot API getMe answer"
    if api_url:
        return (f"TELEGRAM_API_URL ({_shown(api_url)}) does not answer like the Bot API: getMe returned {what}. "
                "Point it at a Bot API server (e.g. telegram-bot-api's http://localhost:8081), or unset it "
                "to use api.telegram.org")
    return (f"{TELEGRAM_URL} does not answer like the Bot API: getMe returned {what}. Is a proxy or a captive "
            "portal in the way?")


def _shown(url: str) -> str:
    """The URL without a user or password in it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) \
        if parts.hostname and "@" in parts.netloc else url
