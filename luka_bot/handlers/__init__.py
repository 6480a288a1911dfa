"""The bot's routers, composed by `get_routers()` (new instances each call)."""

from aiogram import Router

from . import chat, moderation, start


def get_routers() -> list[Router]:
    return [start.build_router(), chat.build_router(), moderation.build_router()]
