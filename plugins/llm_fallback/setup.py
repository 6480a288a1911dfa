"""`setup_llm_fallback(dp, fallback, admin_ids=…)`: wire the plugin into an aiogram dispatcher."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from aiogram import Bot, Dispatcher
from aiogram.exceptions import AiogramError
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault

from .admin import build_admin_router
from .alerts import AdminAlerts
from .callbacks import AnswerUnhandledCallbacks
from .engine import LLMProviderFallback
from .factory import ModelFactory
from .middleware import LLMFallbackMiddleware
from .texts import gettext_for


def setup_llm_fallback(
    dp: Dispatcher,
    fallback: LLMProviderFallback,
    *,
    admin_ids: Collection[int] = (),
    models: ModelFactory | None = None,
    alert_locale: str | None = None,
    shutdown_grace: float = 10.0,
) -> LLMFallbackMiddleware:
    """Register the middleware, the admin router and the admin alerts on `dp`.

    Handlers then receive `llm_fallback` (the service) and `llm_models` (the factory). At
    shutdown, replies in flight get `shutdown_grace` seconds to finish, then are cancelled.
    A callback query no handler took (any router's) is answered, so its button stops spinning.
    """
    middleware = LLMFallbackMiddleware(fallback, models or ModelFactory(fallback))
    dp.update.outer_middleware(middleware)
    dp.callback_query.outer_middleware(AnswerUnhandledCallbacks())
    dp.include_router(build_admin_router(admin_ids))
    alerts: list[AdminAlerts] = []

    async def on_startup(bot: Bot) -> None:
        alerts.append(AdminAlerts(bot, fallback, admin_ids, locale=alert_locale))
        fallback.add_listener(alerts[-1])
        fallback.background.start()

    async def on_shutdown() -> None:
        await fallback.background.stop()
        await middleware.drain(shutdown_grace)
        for alert in alerts:
            await alert.drain()

    dp.startup.register(on_startup)
    dp.shutdown.register(on_shutdown)
    return middleware


def admin_commands(locale: str | None = None) -> list[BotCommand]:
    return [
        BotCommand(command="llm_status", description=gettext_for(locale, "LLM providers: health and controls")),
        BotCommand(command="llm_force", description=gettext_for(locale, "Force a provider: <provider> [seconds]")),
        BotCommand(command="llm_clear", description=gettext_for(locale, "Reset preferred provider, cooldowns, force")),
    ]


async def set_bot_commands(
    bot: Bot, public: Sequence[BotCommand], admin_ids: Collection[int], *, locale: str | None = None,
    language_code: str | None = None,
) -> list[str]:
    """Public commands for everyone; the admin commands too, shown only in each admin's chat.

    A refused call (a Bot API server without `setMyCommands`, an admin chat Telegram does not
    know yet, the network) does not stop the others: returns one line per failed call, empty
    when every menu was set. The menu is a convenience; the caller logs and carries on.
    """
    failures: list[str] = []
    calls: list[tuple[str, list[BotCommand], BotCommandScopeDefault | BotCommandScopeChat]] = [
        ("default scope", list(public), BotCommandScopeDefault()),
        *((f"admin chat {admin_id}", [*public, *admin_commands(locale)], BotCommandScopeChat(chat_id=admin_id))
          for admin_id in admin_ids),
    ]
    for where, commands, scope in calls:
        try:
            await bot.set_my_commands(commands, scope=scope, language_code=language_code)
        except AiogramError as error:
            failures.append(f"{where} ({language_code or 'all languages'}): {error}")
    return failures
