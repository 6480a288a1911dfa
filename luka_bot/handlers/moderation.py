"""Group moderation: `/moderation on|off` (group admins), then every text message is judged."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

from luka_bot.services.bot_store import BotStore
from luka_bot.services.llm_model_factory import LLMModelFactory
from luka_bot.services.moderation_service import evaluate_message_moderation

logger = logging.getLogger(__name__)

GROUPS = F.chat.type.in_({"group", "supergroup"})
SETTING_TTL = 10 * 365 * 24 * 3600.0


def _key(chat_id: int) -> str:
    return f"moderation:{chat_id}"


async def _is_group_admin(bot: Bot, chat_id: int, user_id: int) -> bool:
    member = await bot.get_chat_member(chat_id, user_id)
    return member.status in {"creator", "administrator"}


def build_router() -> Router:
    router = Router(name="moderation")
    router.message.filter(GROUPS)

    @router.message(Command("moderation"))
    async def switch(message: Message, command: CommandObject, bot: Bot, bot_store: BotStore) -> None:
        arg = (command.args or "").strip().lower()
        if arg not in {"on", "off"}:
            await message.answer(_("Usage: /moderation on|off"))
            return
        if message.from_user is None or not await _is_group_admin(bot, message.chat.id, message.from_user.id):
            await message.answer(_("⛔ Only the group's admins can switch moderation."))
            return
        if arg == "on":
            await bot_store.set(_key(message.chat.id), "on", SETTING_TTL)
            await message.answer(_("🛡 Moderation is on in this group."))
        else:
            await bot_store.delete(_key(message.chat.id))
            await message.answer(_("Moderation is off in this group."))

    @router.message(F.text & ~F.text.startswith("/"))
    async def judge(message: Message, bot: Bot, bot_store: BotStore, llm_models: LLMModelFactory) -> None:
        (enabled,) = await bot_store.get_many([_key(message.chat.id)])
        if enabled != "on" or message.from_user is None or message.from_user.is_bot:
            return
        verdict = await evaluate_message_moderation(message.text or "", chat_id=message.chat.id, models=llm_models)
        if verdict.action == "allow":
            return
        if verdict.action == "warn":
            await message.reply(_("⚠️ Please keep it friendly. ({reason})").format(reason=verdict.reason),
                                parse_mode=None)
            return
        try:
            await message.delete()
        except (TelegramBadRequest, TelegramForbiddenError) as error:
            logger.warning("could not delete message %s in chat %s: %s", message.message_id, message.chat.id,
                           error.message)
            return
        name = message.from_user.full_name
        await message.answer(_("🛡 A message from {name} was removed: {reason}").format(name=name,
                                                                                         reason=verdict.reason),
                             parse_mode=None)

    return router
