"""Sending model text safely: plain text (no parse mode), split at Telegram's 4096-char limit."""

from __future__ import annotations

from aiogram.types import Message

TELEGRAM_LIMIT = 4096


def split_text(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split on paragraph, line, then word boundaries; never exceed `limit` characters."""
    chunks: list[str] = []
    rest = text.strip() or "…"
    while len(rest) > limit:
        cut = max(rest.rfind("\n\n", 0, limit), rest.rfind("\n", 0, limit), rest.rfind(" ", 0, limit))
        if cut <= limit // 2:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    chunks.append(rest)
    return chunks


async def answer_long(message: Message, text: str) -> None:
    """Answer with model text as plain text, in as many messages as it takes."""
    for chunk in split_text(text):
        await message.answer(chunk, parse_mode=None)
