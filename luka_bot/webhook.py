"""Webhook mode: Telegram posts updates to an aiohttp server (when WEBHOOK_URL is set).

The public URL is `WEBHOOK_URL + WEBHOOK_PATH`; the server listens on WEBHOOK_HOST:WEBHOOK_PORT
(put a TLS-terminating proxy in front). With WEBHOOK_SECRET, requests without Telegram's
secret header are refused and logged at most once a minute (luka_bot/webhook_secret.py).
Each update is recorded in the durable inbox before the 200 (luka_bot/services/inbox); at most
BOT_MAX_CONCURRENT_UPDATES are handled at once, as in polling (the inbox's middleware).
SIGINT/SIGTERM stop it like polling: in-flight replies drain first.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiogram import Bot
from aiogram.webhook.aiohttp_server import setup_application
from aiohttp import web

from luka_bot.core.loader import App
from luka_bot.core.metrics import attach_metrics_route
from luka_bot.services.inbox import Inbox, RecordBeforeAnswering
from luka_bot.services.inbox.telegram import Handling
from luka_bot.webhook_secret import SecretCheckingRequestHandler

logger = logging.getLogger("luka_bot")


class WebhookRequestHandler(RecordBeforeAnswering, SecretCheckingRequestHandler):
    """Refuses requests without the secret; records each update in the inbox before the 200."""

    def __init__(self, *args: Any, inbox: Inbox, handling: Handling, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.inbox = inbox
        self.handling = handling


async def run_webhook(app: App) -> None:
    settings = app.settings
    assert settings.WEBHOOK_URL is not None
    secret = settings.WEBHOOK_SECRET.get_secret_value() if settings.WEBHOOK_SECRET else None
    web_app = web.Application()
    # Dispatcher start-up/shutdown first, so replies in flight drain before the bot's session closes.
    setup_application(web_app, app.dp, bot=app.bot)
    WebhookRequestHandler(dispatcher=app.dp, bot=app.bot, secret_token=secret, inbox=app.dp["inbox"],
                          handling=app.dp["inbox_handling"]).register(web_app, path=settings.WEBHOOK_PATH)
    attach_metrics_route(web_app, app.metrics)  # metrics: /metrics here when METRICS_PORT == WEBHOOK_PORT

    async def set_webhook(bot: Bot) -> None:
        await bot.set_webhook(settings.WEBHOOK_URL + settings.WEBHOOK_PATH, secret_token=secret,
                              allowed_updates=app.dp.resolve_used_update_types())
        logger.info("🌐 Webhook set: %s%s", settings.WEBHOOK_URL, settings.WEBHOOK_PATH)

    app.dp.startup.register(set_webhook)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, settings.WEBHOOK_HOST, settings.WEBHOOK_PORT)
    await site.start()
    logger.info("🌐 Listening for updates on %s:%s", settings.WEBHOOK_HOST, settings.WEBHOOK_PORT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
