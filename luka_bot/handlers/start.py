"""/start and /help."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _


def build_router() -> Router:
    router = Router(name="start")

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(_("👋 Hi! I'm Luka. Write me anything and I'll answer.\n"
                               "/new starts a new thread, /threads lists your threads, /help shows help."))

    @router.message(Command("help"))
    async def help_(message: Message) -> None:
        await message.answer(_("I answer your messages with a language model. If one model provider is down, "
                               "another one answers.\n/new — start a new thread\n/threads — your recent threads\n"
                               "/moderation on|off — moderation in a group (group admins)"))

    return router
