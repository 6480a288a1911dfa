"""`setup_inbox(dp, bot, settings, stores)`: the inbox for these settings, wired into aiogram.

Call it after the fallback plugin's `setup_llm_fallback` (so its drain at shutdown also covers
updates waiting for their turn, and the inbox hands back what the drain cancelled) and before the
stores are closed at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Any

from aiogram import Bot, Dispatcher

from luka_bot.core.config import Settings
from luka_bot.services.state_stores import Stores, redis_options
from luka_bot.services.task_cancel import cancel_and_wait
from plugins.llm_fallback import SharedRedis, connect_redis

from .entries import InboxStats
from .inbox import Inbox
from .keeper import Keeper
from .redis_log import RedisInboxLog
from .telegram import Handling, InboxMiddleware, QuoteLateAnswers, RecordBeforeConfirm

logger = logging.getLogger("luka_bot.inbox")


def consumer_name() -> str:
    """This process, as the consumer group knows it: host, pid and a random tail (a pid can come back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def build_inbox(settings: Settings, stores: Stores) -> Inbox:
    """In Redis when the stores use Redis, else in process memory."""
    backlog = max(4 * settings.BOT_MAX_CONCURRENT_UPDATES, 100) if settings.BOT_MAX_CONCURRENT_UPDATES else 0
    if stores.shared is None:
        return Inbox(orphan_after=settings.INBOX_ORPHAN_AFTER, max_backlog=backlog)
    _, prefix = settings.redis_prefixes()
    log = RedisInboxLog(stores.shared.client, prefix=prefix, consumer=consumer_name(),
                        timeout=settings.REDIS_SOCKET_TIMEOUT)
    return Inbox(log, stores.shared, orphan_after=settings.INBOX_ORPHAN_AFTER, max_backlog=backlog)


def setup_inbox(dp: Dispatcher, bot: Bot, settings: Settings, stores: Stores) -> Inbox:
    """The inbox (`dp["inbox"]`, so `inbox: Inbox` reaches handlers), its middlewares, start-up and shutdown."""
    inbox = build_inbox(settings, stores)
    dp["inbox"] = inbox

    async def waiting_line() -> str:
        return (await inbox.stats()).summary()

    dp["llm_status_extras"] = [*dp.workflow_data.get("llm_status_extras", ()), waiting_line]  # /llm_status
    dp.update.outer_middleware(InboxMiddleware(inbox, settings.BOT_MAX_CONCURRENT_UPDATES))
    bot.session.middleware(RecordBeforeConfirm(inbox))
    bot.session.middleware(QuoteLateAnswers(settings.LATE_ANSWER_QUOTE_AFTER))
    handling = dp["inbox_handling"] = Handling(dp, inbox)
    keeper = Keeper(inbox, inbox.log, handling.start_entry) if inbox.log is not None else None
    running: list[asyncio.Task[Any]] = []

    async def on_startup(bot: Bot) -> None:
        handling.bot = bot
        logger.info("📥 %s", describe(inbox))
        if keeper is not None:
            running.append(asyncio.create_task(keeper.run(), name="inbox keeper"))

    async def on_shutdown() -> None:
        for task in running:
            await cancel_and_wait(task)
        if keeper is not None:
            await keeper.hand_back()
            await keeper.close()

    dp.startup.register(on_startup)
    dp.shutdown.register(on_shutdown)
    return inbox


def describe(inbox: Inbox) -> str:
    """The start-up line: what survives a stopped process."""
    if inbox.log is None:
        return ("Inbox: process memory, NOT durable: messages being answered when this process stops are lost "
                "(set REDIS_URL to keep them)")
    return (f"Inbox: durable (Redis stream {inbox.log.stream}): a message is kept from its receipt until its "
            f"answer is sent; a stopped process's messages are answered by another after {inbox.orphan_after:g}s")


async def read_inbox_stats(settings: Settings) -> InboxStats | None:
    """The shared inbox's stats, read from Redis without a running bot (the CLI); None without Redis."""
    options = redis_options(settings)
    if not options.configured:
        return None
    shared = SharedRedis(connect_redis(options), retry_interval=settings.REDIS_RETRY_INTERVAL)
    shared.attach(lambda: None)
    _, prefix = settings.redis_prefixes()
    inbox = Inbox(RedisInboxLog(shared.client, prefix=prefix, consumer="cli"), shared,
                  orphan_after=settings.INBOX_ORPHAN_AFTER)
    try:
        return await inbox.stats()
    finally:
        await shared.close()
