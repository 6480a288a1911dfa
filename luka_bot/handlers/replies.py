"""Sending model text safely: plain text (no parse mode), split at Telegram's 4096-char limit."""

from __future__ import annotations

from collections.abc import Iterable

from aiogram.types import Message

from luka_bot.services.message_text import TELEGRAM_LIMIT, split_text

__all__ = ["TELEGRAM_LIMIT", "answer_chunks", "answer_long", "split_text"]


async def answer_long(message: Message, text: str) -> None:
    """Answer with model text as plain text, in as many messages as it takes."""
    await answer_chunks(message, split_text(text))


async def answer_chunks(message: Message, chunks: Iterable[str]) -> None:
    for chunk in chunks:
        await message.answer(chunk, parse_mode=None)
