"""Flood pauses: what a 429's `retry_after` stops, for how long, and the one log line per flood episode.

Telegram's 429 does not say whether it hit one chat's limit or the bot's. The scope is taken
from the evidence: a 429 in one chat pauses that chat; a 429 without a chat, or 429s in two
different chats while a pause is on, pause the whole bot (every chat, every replica: the pause
is also written to Redis, where the other replicas read it before each send). A 429 on a frame
(a draft or streaming edit) pauses only that reply's frames (the preview does it), but counts as
evidence for the scope: an answer is never held back by a frame.

A flood episode runs from the first 429 until every pause has ended and a send went through:
one WARNING when it starts, one INFO line when it is over, nothing in between.
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum

from plugins.llm_fallback import SharedRedis

from .budget import ChatId, Clock

logger = logging.getLogger("luka_bot")

PAUSE_KEY = "pause"


class Scope(StrEnum):
    CHAT = "chat"
    BOT = "bot"


class FloodPauses:
    def __init__(self, *, clock: Clock = time.time):
        self.clock = clock
        self.shared: SharedRedis | None = None
        self.prefix = ""
        self._bot_until = 0.0
        self._chats: dict[ChatId, float] = {}
        """Chats whose sends are paused, until when."""
        self._evidence: dict[ChatId, float] = {}
        """Chats that had a 429 (frames too), until when its retry_after ran."""
        self._episode_started: float | None = None
        self._episode_floods = 0
        self._episode_bot_wide = False
        self.undelivered = 0
        """Sends given up in the current episode (reported when it is over)."""

    def share(self, shared: SharedRedis | None, prefix: str) -> None:
        self.shared = shared
        self.prefix = prefix

    async def flooded(self, chat: ChatId | None, retry_after: float, method: str, *, frame: bool = False) -> Scope:
        """A 429 with `retry_after` on `method` in `chat`: pause what it hit and return the scope."""
        now = self.clock()
        self._expire(now)
        scope = Scope.BOT if chat is None or set(self._evidence) - {chat} else Scope.CHAT
        until = now + retry_after
        if chat is not None:
            self._evidence[chat] = max(self._evidence.get(chat, 0.0), until)
            if not frame:
                self._chats[chat] = max(self._chats.get(chat, 0.0), until)
        if scope is Scope.BOT:
            self._bot_until = max(self._bot_until, until, *self._chats.values())
            await self._publish(self._bot_until)
        self._note(now, scope, chat, retry_after, method, frame)
        return scope

    def local(self, chat: ChatId | None) -> float:
        """Seconds until sends into `chat` may go, from what this process knows."""
        now = self.clock()
        until = max(self._bot_until, self._chats.get(chat, 0.0) if chat is not None else 0.0)
        return max(0.0, until - now)

    async def bot_wide(self) -> float:
        """Seconds until the bot may send again (a bot-wide pause of this or another replica)."""
        if self.shared is not None:
            self._bot_until = max(self._bot_until, await self._read_shared())
        return max(0.0, self._bot_until - self.clock())

    def delivered(self) -> None:
        """A send went through: the episode is over once no pause is left."""
        if self._episode_started is None:
            return
        now = self.clock()
        self._expire(now)
        if self._bot_until > now or self._chats:
            return
        lost = f"{self.undelivered} not delivered" if self.undelivered else "every answer delivered"
        logger.info("✅ Telegram flood control episode over after %.0fs: %d × 429 (%s), %s",
                    now - self._episode_started, self._episode_floods,
                    "bot-wide" if self._episode_bot_wide else "per chat", lost)
        self._episode_started = None
        self.undelivered = 0

    def _note(self, now: float, scope: Scope, chat: ChatId | None, retry_after: float, method: str,
              frame: bool) -> None:
        if self._episode_started is None:
            self._episode_started, self._episode_floods, self._episode_bot_wide = now, 0, False
            where = "the whole bot" if scope is Scope.BOT else f"chat {chat}"
            paused = "every chat" if scope is Scope.BOT else "that reply's frames" if frame else "that chat"
            logger.warning("⏳ Telegram flood control: 429 on %s in %s, retry after %ss; pausing %s, sends wait "
                           "their turn and are retried (one line per flood episode)", method, where, retry_after,
                           paused)
        elif scope is Scope.BOT and not self._episode_bot_wide:
            logger.info("⏳ Telegram flood control now pauses every chat for %.0fs (429s in several chats)",
                        self._bot_until - now)
        self._episode_floods += 1
        self._episode_bot_wide |= scope is Scope.BOT

    def _expire(self, now: float) -> None:
        for paused in (self._chats, self._evidence):
            for chat in [c for c, until in paused.items() if until <= now]:
                del paused[chat]

    async def _publish(self, until: float) -> None:
        if self.shared is None:
            return
        client, key, ttl_ms = self.shared.client, self.prefix + PAUSE_KEY, max(1, int((until - self.clock()) * 1000))

        async def in_redis() -> None:
            await client.set(key, repr(until), px=ttl_ms)

        async def nowhere() -> None:
            return None

        await self.shared.run("flood pause", in_redis, nowhere)

    async def _read_shared(self) -> float:
        assert self.shared is not None
        client, key = self.shared.client, self.prefix + PAUSE_KEY

        async def in_redis() -> float:
            value = await client.get(key)
            return float(value) if value else 0.0

        async def nothing() -> float:
            return 0.0

        return await self.shared.run("flood pause", in_redis, nothing)
