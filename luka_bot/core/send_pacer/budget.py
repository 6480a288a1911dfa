"""The send budget: token buckets (pyrate-limiter's GCRA), in Redis for the whole bot or in this process.

A bucket is one key: `all` (the bot's overall rate) or `chat:<id>` (one chat's rate and, for a
group, its per-minute rate too, both in the same key so one atomic step checks both). The
buckets are `luka_bot.core.rate_buckets`: `take()` spends one token if the bucket has one and
otherwise says how long until it will, never waiting itself; with Redis (`share()`) every
replica spends from the same buckets, under the bot's key prefix; while Redis does not answer
(or without it) each process spends from its own buckets at the full rate: sending never stops
for want of Redis.

Spare sends (frames) see the same buckets with a burst of 1 (`spare=True`: the same rate and
the same stored state): one is admitted only while its buckets are full, i.e. it takes a token
that would otherwise overflow, never one an answer is about to need; otherwise it takes nothing.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from pyrate_limiter import Duration, Rate

from luka_bot.core.rate_buckets import Clock, RateBuckets

ChatId = int | str

RESOLUTION = 1_000_000
"""Rates are kept as whole `per_second × RESOLUTION` per `RESOLUTION` s (GCRA wants integers)."""
IDLE_FORGET = 120.0
"""Seconds after which an unused chat's bucket is forgotten (long after it has refilled)."""


def _rate(per_second: float, burst: int) -> Rate:
    return Rate(max(1, round(per_second * RESOLUTION)), Duration.SECOND * RESOLUTION, burst=max(1, burst))


def is_group(chat: ChatId) -> bool:
    """Groups, supergroups and channels have negative ids (or an @username)."""
    return isinstance(chat, str) or chat < 0


@dataclass(frozen=True)
class Limits:
    per_second: float = 30.0
    """The whole bot, every chat together."""
    burst: int = 20
    chat_per_second: float = 1.0
    chat_burst: int = 3
    group_per_minute: float = 20.0

    def overall(self, *, spare: bool = False) -> list[Rate]:
        return _rates(self, "all", spare)

    def chat(self, chat: ChatId, *, spare: bool = False) -> list[Rate]:
        """The chat's rate, then (groups) its per-minute rate: always in this order (one state field each)."""
        return _rates(self, "group" if is_group(chat) else "private", spare)


@functools.cache
def _rates(limits: Limits, kind: str, spare: bool) -> list[Rate]:
    """Built once per limits, kind and spare (every send asks; the lists are only read)."""
    if kind == "all":
        return [_rate(limits.per_second, 1 if spare else limits.burst)]
    burst = 1 if spare else limits.chat_burst
    rates = [_rate(limits.chat_per_second, burst)]
    if kind == "group":
        rates.append(_rate(limits.group_per_minute / 60, burst))
    return rates


class SendBudget(RateBuckets):
    """The send pacer's buckets (`all`, `chat:<id>`) and its `limits`; `take()` as `RateBuckets.take`."""

    def __init__(self, limits: Limits, *, clock: Clock = time.time):
        super().__init__(clock=clock, forget_after=IDLE_FORGET, name="send budget")
        self.limits = limits
