"""Builds the application: Bot, Dispatcher, stores, the fallback service, routers, plugin."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiogram import Bot, Dispatcher
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BotCommand
from aiogram.utils.i18n import I18n, SimpleI18nMiddleware

from luka_bot.core.bot_api_session import BotApiSession
from luka_bot.core.config import ConfigError, Settings
from luka_bot.core.i18n import build_i18n
from luka_bot.core.metrics import BotMetrics, setup_metrics
from luka_bot.core.polling_conflict import PollingConflictMiddleware
from luka_bot.core.send_pacer import PacedSends, paced_sends, setup_paced_sends
from luka_bot.core.telegram_responses import PinResponseModels
from luka_bot.core.user_limits import setup_user_limits
from luka_bot.handlers import get_routers
from luka_bot.services.bot_store import BotStore
from luka_bot.services.conversations import Conversations
from luka_bot.services.inbox import Inbox, setup_inbox
from luka_bot.services.llm_model_factory import LLMModelFactory
from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback, set_llm_provider_fallback
from luka_bot.services.state_stores import Stores, build_stores
from luka_bot.services.streaming import ReplyStreaming
from plugins.llm_fallback import LLMProviderFallback, set_bot_commands, setup_llm_fallback

logger = logging.getLogger("luka_bot")


def N_(text: str) -> str:
    return text


PUBLIC_COMMANDS = {
    "start": N_("Start"),
    "help": N_("Help"),
    "new": N_("Start a new thread"),
    "threads": N_("Your recent threads"),
    "moderation": N_("Moderation in a group: on|off"),
}


@dataclass
class App:
    settings: Settings
    bot: Bot
    dp: Dispatcher
    fallback: LLMProviderFallback
    bot_store: BotStore
    i18n: I18n
    stores: Stores
    metrics: BotMetrics | None = None
    inbox: Inbox | None = None
    paced: PacedSends | None = None


def build_bot(settings: Settings) -> Bot:
    if settings.BOT_TOKEN is None:
        raise ConfigError("BOT_TOKEN is not set: put it in the environment or in .env")
    session = BotApiSession()
    if settings.TELEGRAM_API_URL:
        session = BotApiSession(api=TelegramAPIServer.from_base(settings.TELEGRAM_API_URL))
    session.middleware(paced_sends(settings))
    session.middleware(PollingConflictMiddleware())
    session.middleware(PinResponseModels())
    return Bot(settings.BOT_TOKEN.get_secret_value(), session=session)


def build_app(settings: Settings, *, fallback: LLMProviderFallback | None = None, bot: Bot | None = None) -> App:
    bot = bot or build_bot(settings)
    stores = build_stores(settings)
    fallback = fallback or create_llm_provider_fallback(settings, stores.fallback)
    set_llm_provider_fallback(fallback)
    bot_store = stores.bot
    i18n = build_i18n(settings.DEFAULT_LANGUAGE)

    dp = Dispatcher(bot_store=bot_store,
                    conversations=Conversations(bot_store, max_messages=settings.HISTORY_MAX_MESSAGES,
                                                ttl=settings.HISTORY_TTL),
                    reply_streaming=ReplyStreaming(enabled=settings.STREAMING == "on",
                                                   interval=settings.STREAM_DRAFT_INTERVAL, store=bot_store,
                                                   markdown=settings.MARKDOWN == "on"))
    paced = setup_paced_sends(bot, dp, stores.shared, settings.redis_prefixes()[1] + "send:")
    metrics = setup_metrics(settings, fallback, dp, paced)  # None unless METRICS_PORT is set
    setup_user_limits(dp, settings, stores.shared, metrics)
    SimpleI18nMiddleware(i18n).setup(dp)
    setup_llm_fallback(dp, fallback, admin_ids=settings.ADMIN_IDS, models=LLMModelFactory(fallback),
                       alert_locale=settings.DEFAULT_LANGUAGE)
    inbox = setup_inbox(dp, bot, settings, stores)  # after the plugin: its drain covers updates waiting their turn
    dp.include_routers(*get_routers())

    async def on_startup(bot: Bot) -> None:
        failures: list[str] = []
        for locale in (None, *i18n.available_locales):
            public = [BotCommand(command=c, description=i18n.gettext(d, locale=locale or i18n.default_locale))
                      for c, d in PUBLIC_COMMANDS.items()]
            with i18n.context():
                failures += await set_bot_commands(bot, public, settings.ADMIN_IDS,
                                                   locale=locale or i18n.default_locale, language_code=locale)
        if failures:  # the command menu is a convenience: say so once and keep serving
            logger.warning("⚠️ Bot command menu not fully set (%d call(s) refused), carrying on; first: %s",
                           len(failures), failures[0].splitlines()[0])

    async def on_shutdown() -> None:
        await fallback.aclose()
        await stores.close()

    dp.startup.register(on_startup)
    dp.shutdown.register(on_shutdown)
    return App(settings, bot, dp, fallback, bot_store, i18n, stores, metrics, inbox, paced)
