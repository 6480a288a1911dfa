"""Webhook requests without the right secret token: refused (401) and logged, at most once a minute.

Telegram sends `X-Telegram-Bot-Api-Secret-Token` on every update when the webhook was set with a
secret. A request without it (or with another value) is someone else posting to the bot's URL, or
a secret that changed without `setWebhook`: the operator should know, without the log filling up
under a flood. The line says how many were refused since the last line, missing vs wrong, and the
last sender's address; never the token received (it may be an old secret) nor the bot token.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

logger = logging.getLogger("luka_bot")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class RefusedRequestsLog:
    """Counts refused requests; logs the first at once, then at most one line per `interval` seconds."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._pending: Counter[str] = Counter()
        self._last_line: float | None = None

    def refused(self, reason: str, remote: str | None) -> None:
        self._pending[reason] += 1
        now = self.clock()
        if self._last_line is not None and now - self._last_line < self.interval:
            return
        total = sum(self._pending.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self._pending.items()))
        since = "" if self._last_line is None else f" in the last {round(now - self._last_line)}s"
        logger.warning("⛔ Webhook refused %d request(s)%s without the right secret token (%s); last from %s",
                       total, since, reasons, remote or "unknown")
        self._pending.clear()
        self._last_line = now


class SecretCheckingRequestHandler(SimpleRequestHandler):
    """aiogram's `SimpleRequestHandler` (same 401 for a wrong or missing secret), plus the log line."""

    def __init__(self, *args: Any, refusals: RefusedRequestsLog | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.refusals = refusals or RefusedRequestsLog()

    async def handle(self, request: web.Request) -> web.Response:
        response = await super().handle(request)
        if response.status == 401 and self.secret_token:
            reason = "missing" if SECRET_HEADER not in request.headers else "wrong"
            self.refusals.refused(reason, request.remote)
        return response
