"""Admin commands inside Telegram: `/llm_status`, `/llm_force <provider> [seconds]`, `/llm_clear`.

Admins are the user ids given to `build_admin_router`; everyone else gets a polite refusal and
nothing changes. Inline buttons (force for 10 min, clear, refresh, check now) go through the
same gate: callback data can be forged. Commands and buttons work in private chats only (a
group gets a short pointer, never provider errors). Every `llmadm:` callback query is answered,
even one whose data does not parse, so no button keeps spinning.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, TelegramObject
from aiogram.utils.formatting import Bold, Text, as_line
from aiogram.utils.keyboard import InlineKeyboardBuilder

from .engine import LLMProviderFallback
from .force import DEFAULT_FORCE_SECONDS, MAX_FORCE_SECONDS, MIN_FORCE_SECONDS, ForceError, Refusal, parse_force
from .status import FallbackStatus, ProviderState, ProviderStatus
from .texts import _, duration

logger = logging.getLogger(__name__)

BUTTON_FORCE_SECONDS = 600
StatusExtras = Sequence[Callable[[], Awaitable[str]]]
"""What a bot adds to `/llm_status` (`dp["llm_status_extras"]`): each call gives one translated line."""
ADMIN_COMMANDS = ("llm_status", "llm_force", "llm_clear")


class AdminAction(CallbackData, prefix="llmadm"):
    """Inline button payload: `action` is force / clear / refresh / check."""

    action: str
    provider: str = ""


class IsAdmin(Filter):
    """Passes only for users whose id is in `admin_ids`."""

    def __init__(self, admin_ids: Collection[int]):
        self.admin_ids = frozenset(admin_ids)

    async def __call__(self, event: TelegramObject, event_from_user: Any = None) -> bool:
        return event_from_user is not None and event_from_user.id in self.admin_ids


class InPrivateChat(Filter):
    """Passes for messages in a private chat and for buttons under such a message."""

    async def __call__(self, event: TelegramObject) -> bool:
        message = event.message if isinstance(event, CallbackQuery) else event
        chat = getattr(message, "chat", None)
        return chat is not None and chat.type == ChatType.PRIVATE


def is_admin_button_data(data: str | None) -> bool:
    """Callback data meant for this router (`llmadm:…`), whether or not it parses."""
    return data is not None and (data == AdminAction.__prefix__ or data.startswith(f"{AdminAction.__prefix__}:"))


# --- rendering ---------------------------------------------------------------------------------------


def render_status(status: FallbackStatus, extra_lines: Sequence[str] = ()) -> Text:
    """`/llm_status` as formatted text (entities, so no parse errors on any error text).

    `extra_lines`: the bot's own lines after the plugin's (e.g. messages waiting for an answer)."""
    lines: list[Any] = [as_line(Bold(_("🤖 LLM providers")))]
    for index, provider in enumerate(status.providers, start=1):
        lines.append(as_line(f"{index}. ", Bold(provider.name), " — ", _state_text(provider)))
        if provider.last_error:
            lines.append(as_line("   ", _("last error {ago} ago: {error}",
                                          ago=duration(provider.last_error_seconds_ago or 0),
                                          error=provider.last_error)))
        if provider.hedges_last_hour:
            lines.append(as_line("   ", _("slow first reply: hedged to the next provider {count} times in the last hour",
                                          count=provider.hedges_last_hour)))
        if provider.unavailable_models:
            lines.append(as_line("   ", _("models not found: {models}", models=", ".join(provider.unavailable_models))))
        if provider.next_probe_seconds is not None:
            lines.append(as_line("   ", _("next recovery probe in {left}", left=duration(provider.next_probe_seconds))))
        if provider.ready is not None:
            ago = duration(provider.ready_checked_seconds_ago or 0)
            lines.append(as_line("   ", _("standby check {ago} ago: ready", ago=ago) if provider.ready
                                 else _("standby check {ago} ago: can't answer: {error}", ago=ago,
                                        error=provider.ready_error or "?")))
    lines.append(as_line(_("Preferred (cached): {provider}", provider=status.preferred_provider or _("none"))))
    if status.forced_provider:
        lines.append(as_line(_("Forced: {provider}, {left} left", provider=status.forced_provider,
                               left=duration(status.forced_seconds_left or 0))))
    else:
        lines.append(as_line(_("Forced: none")))
    lines.append(as_line(_("State store: {store}", store=_store_text(status.store))))
    lines += [as_line(line) for line in extra_lines if line]
    return Text(*lines)


def _state_text(provider: ProviderStatus) -> str:
    if provider.state is ProviderState.NOT_CONFIGURED:
        return _("⚪ not configured")
    if provider.state is ProviderState.COOLING:
        text = _("🔴 cooling down, {left} left (failures: {count})",
                 left=duration(provider.cooldown_seconds_left), count=provider.failures)
        if provider.cooldown_multiplier > 1:
            text += " " + _("— cooldown grown ×{multiplier} after failed probes", multiplier=provider.cooldown_multiplier)
        return text
    if provider.state is ProviderState.HALF_OPEN:
        return _("🟡 cooldown over, next request probes it")
    if provider.state is ProviderState.UNKNOWN:
        return _("⚪ unknown: not tried or checked yet")
    return _("🟢 healthy")


def _store_text(kind: str) -> str:
    return {"redis": _("Redis (shared)"), "memory": _("memory (this process)"),
            "degraded": _("memory — Redis not answering")}.get(kind, kind)


def status_keyboard(fallback: LLMProviderFallback) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for provider in fallback.configured:
        builder.button(text=_("Force {provider} 10 min", provider=provider),
                       callback_data=AdminAction(action="force", provider=provider))
    builder.button(text=_("🧹 Clear"), callback_data=AdminAction(action="clear"))
    builder.button(text=_("🔎 Check now"), callback_data=AdminAction(action="check"))
    builder.button(text=_("🔄 Refresh"), callback_data=AdminAction(action="refresh"))
    builder.adjust(max(1, len(fallback.configured)), 3)
    return builder.as_markup()


def usage(fallback: LLMProviderFallback) -> str:
    return _(
        "Usage: /llm_force <provider> [seconds]\nProviders: {providers}\n"
        "Seconds: {low}–{high} (default {default}).",
        providers=", ".join(fallback.configured), low=MIN_FORCE_SECONDS, high=MAX_FORCE_SECONDS,
        default=DEFAULT_FORCE_SECONDS,
    )


def force_refused(error: ForceError, fallback: LLMProviderFallback) -> str:
    """The admin's answer to a refused `/llm_force`: what to set, or how to use it."""
    if error.refusal is Refusal.NOT_CONFIGURED and error.setting:
        return _("⚠️ {provider} is not configured, so it can't be forced: set {setting} and restart the bot.",
                 provider=error.provider, setting=error.setting)
    return usage(fallback)


def _cleared_text(cleared: dict[str, Any]) -> str:
    none = _("none")
    return _("🧹 Cleared. Preferred provider: {preferred}; forced provider: {forced}; cooldowns: {cooldowns}.",
             preferred=cleared["preferred"] or none, forced=cleared["forced"] or none,
             cooldowns=", ".join(cleared["cooldowns"]) or none)


def _forced_text(provider: str, seconds: int, until: float) -> str:
    when = datetime.fromtimestamp(until, tz=UTC).strftime("%H:%M:%S UTC")
    return _("✅ {provider} forced for {left} (until {until}). Other providers stay behind it as fallbacks.",
             provider=provider, left=duration(seconds), until=when)


# --- the router ----------------------------------------------------------------------------------------


def build_admin_router(admin_ids: Collection[int]) -> Router:
    """A new router with the admin commands (routers attach to one parent: build one per dispatcher)."""
    router = Router(name="llm_fallback_admin")
    is_admin = IsAdmin(admin_ids)
    private = InPrivateChat()
    our_button = F.data.func(is_admin_button_data)

    @router.message(Command(*ADMIN_COMMANDS), private, is_admin)
    async def admin_command(message: Message, command: CommandObject, llm_fallback: LLMProviderFallback,
                            llm_status_extras: StatusExtras = ()) -> None:
        if command.command == "llm_status":
            await send_status(message, llm_fallback, extras=llm_status_extras)
        elif command.command == "llm_force":
            try:
                force = parse_force(command.args, order=llm_fallback.order, configured=llm_fallback.configured,
                                    setting_hints=llm_fallback.providers.setting_hints)
            except ForceError as error:
                await message.answer(force_refused(error, llm_fallback))
                return
            until = await llm_fallback.force_provider(force.provider, force.seconds)
            logger.warning("🔧 Admin %s forced %s for %ss", message.from_user and message.from_user.id,
                           force.provider, force.seconds)
            await message.answer(_forced_text(force.provider, force.seconds, until))
        else:
            if command.args:
                await message.answer(_("Usage: /llm_clear (no arguments)."))
                return
            await message.answer(_cleared_text(await llm_fallback.clear_cache()))

    @router.message(Command(*ADMIN_COMMANDS), private)
    async def not_admin(message: Message) -> None:
        await message.answer(_("⛔ This command is for the bot's admins only."))

    @router.message(Command(*ADMIN_COMMANDS))
    async def not_private(message: Message) -> None:
        await message.answer(_private_only_text())

    @router.callback_query(AdminAction.filter(), private, is_admin)
    async def admin_button(query: CallbackQuery, callback_data: AdminAction,
                           llm_fallback: LLMProviderFallback, llm_status_extras: StatusExtras = ()) -> None:
        note = ""
        if callback_data.action == "force" and callback_data.provider in llm_fallback.configured:
            await llm_fallback.force_provider(callback_data.provider, BUTTON_FORCE_SECONDS)
            note = _("{provider} forced for {left}", provider=callback_data.provider,
                     left=duration(BUTTON_FORCE_SECONDS))
        elif callback_data.action == "clear":
            await llm_fallback.clear_cache()
            note = _("Cleared")
        elif callback_data.action == "check":
            problems = await llm_fallback.check_providers()
            note = ", ".join(f"{p}: {'OK' if e is None else e}" for p, e in problems.items())[:190]
        elif callback_data.action != "refresh":
            await query.answer(_("Unknown action."), show_alert=True)
            return
        await query.answer(note)  # first: a failing edit below must not leave the button spinning
        if isinstance(query.message, Message):
            await send_status(query.message, llm_fallback, edit=True, extras=llm_status_extras)

    @router.callback_query(our_button, private, is_admin)
    async def button_data_not_understood(query: CallbackQuery) -> None:
        await query.answer(_("Unknown action."), show_alert=True)

    @router.callback_query(our_button, private)
    async def button_not_admin(query: CallbackQuery) -> None:
        await query.answer(_("⛔ This command is for the bot's admins only."), show_alert=True)

    @router.callback_query(our_button)
    async def button_not_private(query: CallbackQuery) -> None:
        await query.answer(_private_only_text(), show_alert=True)

    return router


def _private_only_text() -> str:
    return _("🔒 LLM admin commands work only in a private chat with the bot.")


async def send_status(message: Message, fallback: LLMProviderFallback, *, edit: bool = False,
                      extras: StatusExtras = ()) -> None:
    """Send (or edit in place) the status message with its keyboard; `extras` add the bot's own lines."""
    lines = [await extra() for extra in extras]
    content = render_status(await fallback.status(), extra_lines=lines).as_kwargs()
    keyboard = status_keyboard(fallback)
    if not edit:
        await message.answer(**content, reply_markup=keyboard)
        return
    try:
        await message.edit_text(text=content["text"], entities=content["entities"], reply_markup=keyboard)
    except TelegramBadRequest as error:
        if "message is not modified" not in error.message:
            raise
