"""The durable inbox: no message lost to a killed process or a killed replica (docs/operations.md, "Durable inbox").

`setup_inbox(dp, bot, settings, stores)` wires it in; `dp["inbox"]` is the `Inbox`, whose
`await inbox.stats()` gives an `InboxStats` (messages waiting, the oldest one's age);
`read_inbox_stats(settings)` reads the same from Redis without a running bot.
"""

from .entries import DUPLICATE, InboxEntry, InboxStats, order_key
from .inbox import Inbox
from .keeper import Keeper
from .redis_log import RedisInboxLog
from .setup import build_inbox, describe, read_inbox_stats, setup_inbox
from .telegram import InboxMiddleware, QuoteLateAnswers, RecordBeforeAnswering, RecordBeforeConfirm

__all__ = [
    "DUPLICATE",
    "Inbox",
    "InboxEntry",
    "InboxMiddleware",
    "InboxStats",
    "Keeper",
    "QuoteLateAnswers",
    "RecordBeforeAnswering",
    "RecordBeforeConfirm",
    "RedisInboxLog",
    "build_inbox",
    "describe",
    "order_key",
    "read_inbox_stats",
    "setup_inbox",
]
