"""Replies being generated, by (chat_id, draft_id): where a Stop button press finds its run.

The bot's chat handler registers each streamed reply for as long as it runs; the
`stopped_message_generation` handler cancels it through its pydantic-ai `CancellationToken`
(a cancel is the user's choice: no provider is blamed). The registry lives in the process
that generates. Long polling has exactly one process receiving updates, so the Stop reaches
it; with several webhook replicas behind a load balancer a Stop may land on another replica:
then it is published in the shared store (`stop:<chat>:<draft>`, kept a minute) and the
owner, which checks that key once per draft frame while it generates, stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from pydantic_ai import CancellationToken

from luka_bot.services.bot_store import BotStore

logger = logging.getLogger(__name__)

STOP_TTL = 60.0


def _stop_key(chat_id: int, draft_id: int) -> str:
    return f"stop:{chat_id}:{draft_id}"


class Generations:
    def __init__(self, store: BotStore | None = None):
        self.store = store
        self._running: dict[tuple[int, int], CancellationToken] = {}

    def __len__(self) -> int:
        return len(self._running)

    @contextlib.contextmanager
    def running(self, chat_id: int, draft_id: int) -> Iterator[CancellationToken]:
        token = CancellationToken()
        self._running[(chat_id, draft_id)] = token
        try:
            yield token
        finally:
            if self._running.get((chat_id, draft_id)) is token:
                del self._running[(chat_id, draft_id)]

    async def stop(self, chat_id: int, draft_id: int) -> bool:
        """Stop that reply here, or publish the Stop for the process generating it. True: stopped here."""
        token = self._running.get((chat_id, draft_id))
        if token is not None:
            token.cancel()
            return True
        if self.store is not None and self.store.kind != "memory":
            await self.store.set(_stop_key(chat_id, draft_id), "1", STOP_TTL)
        return False

    async def watch(self, chat_id: int, draft_id: int, token: CancellationToken, interval: float) -> None:
        """Until cancelled: every `interval` s, stop the run if another process published its Stop."""
        if self.store is None or self.store.kind == "memory":
            return
        key = _stop_key(chat_id, draft_id)
        while not token.cancelled:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # the store logs its own trouble; a missed Stop is not fatal
                (flag,) = await self.store.get_many([key])
                if flag is not None:
                    logger.info("⏹ Stop for chat %s received by another process", chat_id)
                    token.cancel()
