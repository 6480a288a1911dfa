"""Telegram-like flood control for `FakeTelegram` (off unless a test passes one in).

Telegram does not publish its limits; the Bot FAQ and the big libraries agree on about 30
messages a second for one bot, about 1 a second in one chat (short bursts pass) and 20 a minute
in a group. This models them as token buckets, one overall, one per chat, one more per group
(a negative chat id), each full at rest. A call that sends into a chat (`MESSAGE_METHODS`) takes
a token from each bucket it touches; when any is empty the call is answered 429 with
`parameters.retry_after` (whole seconds, as Telegram gives them) and takes nothing.
`flood_bot(seconds)` answers every such call 429 for that long, whatever the buckets hold (the
bot as a whole is flooded). `sendChatAction`, `answerCallbackQuery`, deletions and reads are not
messages and are never limited here.

    flood = FloodControl()
    async with FakeTelegram(flood_control=flood) as fake: ...
    flood.refused            # how many calls were answered 429, by method
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MESSAGE_METHODS = frozenset({
    "sendmessage", "sendmessagedraft", "editmessagetext", "editmessagecaption", "editmessagemedia",
    "editmessagereplymarkup", "sendphoto", "senddocument", "sendaudio", "sendvideo", "sendanimation",
    "sendvoice", "sendvideonote", "sendsticker", "sendlocation", "sendvenue", "sendcontact", "sendpoll",
    "senddice", "sendmediagroup", "forwardmessage", "copymessage",
})


@dataclass
class TokenBucket:
    rate: float
    """Tokens added per second."""
    burst: float
    """Tokens held at most (and at rest)."""
    tokens: float = -1.0
    at: float = 0.0

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: one is there now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now


@dataclass
class FloodControl:
    overall_rate: float = 30.0
    overall_burst: float = 30.0
    chat_rate: float = 1.0
    chat_burst: float = 3.0
    group_per_minute: float = 20.0
    clock: Callable[[], float] = time.monotonic
    accepted: Counter[str] = field(default_factory=Counter)
    """Calls that took a token, by method."""
    refused: Counter[str] = field(default_factory=Counter)
    """Calls answered 429, by method."""
    refused_by: Counter[str] = field(default_factory=Counter)
    """Calls answered 429, by the bucket that was empty: `overall`, `chat`, `group` or `bot` (`flood_bot`)."""
    _overall: TokenBucket | None = None
    _chats: dict[Any, TokenBucket] = field(default_factory=dict)
    _groups: dict[Any, TokenBucket] = field(default_factory=dict)
    _flooded_until: float = 0.0

    def flood_bot(self, seconds: float) -> None:
        """Every message call is answered 429 for `seconds` from now (the whole bot is flooded)."""
        self._flooded_until = self.clock() + seconds

    def check(self, method: str, params: dict[str, Any]) -> int | None:
        """None if `method` may go now (its tokens are taken), else the `retry_after` to answer 429 with."""
        if method.lower() not in MESSAGE_METHODS:
            return None
        now = self.clock()
        if now < self._flooded_until:
            return self._refuse(method, self._flooded_until - now, "bot")
        buckets = self._buckets(params.get("chat_id"))
        waits = [bucket.wait(now) for bucket in buckets]
        if max(waits) > 0:
            return self._refuse(method, max(waits), ("overall", "chat", "group")[waits.index(max(waits))])
        for bucket in buckets:
            bucket.take(now)
        self.accepted[method] += 1
        return None

    @property
    def total_refused(self) -> int:
        return sum(self.refused.values())

    @property
    def total_accepted(self) -> int:
        return sum(self.accepted.values())

    def _refuse(self, method: str, wait: float, bucket: str) -> int:
        self.refused[method] += 1
        self.refused_by[bucket] += 1
        return max(1, math.ceil(wait))

    def _buckets(self, chat: Any) -> list[TokenBucket]:
        if self._overall is None:
            self._overall = TokenBucket(self.overall_rate, self.overall_burst)
        buckets = [self._overall]
        if chat is None:
            return buckets
        buckets.append(self._chats.setdefault(chat, TokenBucket(self.chat_rate, self.chat_burst)))
        if isinstance(chat, str) or chat < 0:
            buckets.append(self._groups.setdefault(
                chat, TokenBucket(self.group_per_minute / 60, self.group_per_minute)))
        return buckets
