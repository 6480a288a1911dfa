"""What the inbox keeps about one update, which updates it keeps, and what it reports."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiogram.types import Update

from plugins.llm_fallback.texts import _, duration

DUPLICATE: Any = type("Duplicate", (), {"__repr__": lambda self: "DUPLICATE"})()
"""`Inbox.accept`'s outcome for an update already received (Telegram sent it again): not handled again."""

_local_order = itertools.count()


def order_key(update: Update) -> str | None:
    """Which line an update waits in, or None for an update the inbox does not record.

    Recorded: every `message` (private chats, commands, group messages the bot may moderate):
    each of them may get an answer or a verdict. Not recorded: button presses (a lost press
    costs the user one more press), a Stop (it stops a reply of this very moment), member updates.
    Private chat: one line per chat, so a chat's second message waits for its first. Group: one
    line per member, so one member's messages keep their order while a busy group is not judged
    one message at a time.
    """
    message = update.message
    if message is None:
        return None
    if message.chat.type == "private" or message.from_user is None:
        return str(message.chat.id)
    return f"{message.chat.id}:{message.from_user.id}"


@dataclass(eq=False)
class InboxEntry:
    """One recorded update, from its receipt until its answer went out (`done`)."""

    update_id: int
    key: str
    """Its line (`order_key`)."""
    payload: str
    """The update as JSON, to handle it again in another process."""
    stream_id: str | None = None
    """Its entry in the Redis stream; None when it is kept in this process's memory only."""
    first_in_line: bool = True
    """Nobody of its line was waiting when it was recorded, so it need not ask Redis whose turn it is."""
    holds_confirmation: bool = False
    """Kept in memory while Redis was configured but not answering: Telegram's confirmation waits
    for its answer, so a process that dies before answering loses nothing (Telegram sends it again)."""
    attempts: int = 1
    received: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _local: int = field(default_factory=lambda: next(_local_order))

    @property
    def durable(self) -> bool:
        return self.stream_id is not None

    def position(self) -> tuple[float, float]:
        """Its place in its line: stream order for recorded entries (Redis's clock), arrival for the others."""
        if self.stream_id is None:
            return (math.inf, self._local)
        ms, _, seq = self.stream_id.partition("-")
        return (int(ms), int(seq or 0))


@dataclass(frozen=True)
class InboxStats:
    """Messages recorded and not answered yet, across every process sharing Redis (this process's without)."""

    pending: int
    oldest_seconds: float | None
    """Age of the oldest of them (None: nothing waits)."""
    kind: str
    """`redis` (durable), `degraded` (Redis configured, not answering: this process's memory) or `memory`."""
    claimed_total: int = 0
    """Entries this process took over from a process that stopped."""

    @property
    def durable(self) -> bool:
        return self.kind == "redis"

    def summary(self) -> str:
        """One translated status line (`/llm_status`, `luka-bot llm status`): what waits for an answer."""
        if self.pending:
            line = _("📥 Messages waiting for an answer: {count}, the oldest for {age}",
                     count=self.pending, age=duration(self.oldest_seconds or 0))
        else:
            line = _("📥 Messages waiting for an answer: none")
        if self.kind == "memory":
            return f"{line} " + _("(this process only, not durable: set REDIS_URL)")
        if self.kind == "degraded":
            return f"{line} " + _("(Redis is not answering: this process only)")
        return line

    def as_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "oldest_seconds": self.oldest_seconds, "kind": self.kind,
                "durable": self.durable, "claimed_total": self.claimed_total}
