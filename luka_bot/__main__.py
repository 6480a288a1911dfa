"""`python -m luka_bot` / `luka-bot`: run the bot (long polling)."""

from __future__ import annotations

import asyncio
import logging
import sys

from luka_bot.core.config import ConfigError, load_settings
from luka_bot.core.logging_setup import setup_logging

logger = logging.getLogger("luka_bot")


async def run() -> None:
    from luka_bot.core.loader import build_app

    settings = load_settings()
    secrets = [s.get_secret_value() for s in (settings.BOT_TOKEN, settings.OPENAI_API_KEY, settings.WEBHOOK_SECRET)
               if s]
    setup_logging(settings.LOG_LEVEL, secrets)
    app = build_app(settings)
    logger.info("🚀 luka_bot starting (state store: %s)", app.fallback.store.kind)
    try:
        if settings.WEBHOOK_URL:
            from luka_bot.webhook import run_webhook

            await run_webhook(app)
        else:
            await app.dp.start_polling(app.bot, handle_signals=True, close_bot_session=True,
                                       allowed_updates=app.dp.resolve_used_update_types(),
                                       tasks_concurrency_limit=settings.BOT_MAX_CONCURRENT_UPDATES or None)
    finally:
        logger.info("👋 luka_bot stopped")


def main() -> None:
    try:
        asyncio.run(run())
    except ConfigError as error:
        print(f"luka_bot: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
