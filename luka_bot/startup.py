"""`luka-bot run`: start the bot cleanly.

1. Telegram is asked who we are (`getMe`) before anything else: while it cannot be reached
   the bot waits with backoff, one log line per try; a token Telegram refuses stops start-up
   with one line naming `BOT_TOKEN`, a server that answers but not like the Bot API with one
   line naming `TELEGRAM_API_URL` (exit code 2 for both).
2. The state store is probed once, so the start-up line says what is really in use, and the
   LLM providers are reported as they are: configured or not, key or not, retired models.
3. Long polling, or webhook mode when `WEBHOOK_URL` is set.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import User
from aiogram.utils.backoff import Backoff, BackoffConfig

from luka_bot.core.bot_api_session import not_the_bot_api
from luka_bot.core.config import ConfigError, Settings
from luka_bot.core.loader import App, build_app, build_bot
from luka_bot.core.send_pacer import describe as describe_budget
from luka_bot.core.logging_setup import setup_logging
from luka_bot.provider_report import log_provider_report

logger = logging.getLogger("luka_bot")

GETME_TIMEOUT = 10
TELEGRAM_BACKOFF = BackoffConfig(min_delay=1.0, max_delay=30.0, factor=2.0, jitter=0.1)

STORE_TEXT = {
    "redis": "redis (shared)",
    "memory": "memory (this process only, not durable: messages being answered when it stops are lost; "
              "set REDIS_URL to share and keep them)",
    "degraded": "degraded: Redis is not answering, process-local state until it does",
}


async def wait_for_telegram(bot: Bot, backoff_config: BackoffConfig = TELEGRAM_BACKOFF, *,
                            api_url: str | None = None) -> User:
    """`getMe` until Telegram answers; `ConfigError` when it refuses the token (naming BOT_TOKEN) or
    when the server at `api_url` answers, but not like the Bot API (naming TELEGRAM_API_URL)."""
    backoff = Backoff(backoff_config)
    while True:
        try:
            return await bot.get_me(request_timeout=GETME_TIMEOUT)
        except (TelegramUnauthorizedError, TelegramNotFound) as error:
            raise ConfigError(f"BOT_TOKEN was refused by Telegram ({error.message}): check BOT_TOKEN "
                              "(and TELEGRAM_API_URL if you use a local Bot API server)") from None
        except ClientDecodeError as error:
            raise ConfigError(not_the_bot_api(error, api_url)) from None
        except (TelegramNetworkError, TelegramServerError) as error:
            delay = next(backoff)
            logger.warning("⏳ Telegram is not reachable (%s); try %d failed, next in %.0fs",
                           error.message, backoff.counter, delay)
            await asyncio.sleep(delay)


async def store_in_use(app: App) -> str:
    """What the state store really is now (Redis is tried once)."""
    kind = await app.stores.check()
    return STORE_TEXT.get(kind, kind)


async def run_bot(settings: Settings) -> None:
    setup_logging(settings.LOG_LEVEL, settings.secret_values())
    bot = build_bot(settings)
    started = False
    try:
        me = await wait_for_telegram(bot, api_url=settings.TELEGRAM_API_URL)
        app = build_app(settings, bot=bot)
        try:
            store = await store_in_use(app)
            logger.info("🚀 luka_bot starting as @%s (state store: %s; send budget: %s)", me.username, store,
                        describe_budget(app.paced))
            log_provider_report(settings, logger)
            started = True
            if settings.WEBHOOK_URL:
                from luka_bot.webhook import run_webhook  # aiohttp's server only in webhook mode

                await run_webhook(app)
            else:
                # BOT_MAX_CONCURRENT_UPDATES is applied by the inbox's middleware, after a chat's turn
                await app.dp.start_polling(app.bot, handle_signals=True, close_bot_session=True,
                                           allowed_updates=app.dp.resolve_used_update_types())
        finally:
            if not started:
                await app.fallback.aclose()
                await app.stores.close()
    finally:
        if not started:
            await bot.session.close()
        else:
            logger.info("👋 luka_bot stopped")


def main(settings: Settings) -> int:
    try:
        asyncio.run(run_bot(settings))
    except KeyboardInterrupt:
        pass
    return 0
