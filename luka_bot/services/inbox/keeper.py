"""Nobody's message is orphaned: this process keeps its entries alive and takes over the stopped ones'.

Every `orphan_after / 4` seconds one round trip refreshes the entries this process holds (their
idle time in the pending list goes back to 0; the script checks they are still this process's),
and one claims (`XAUTOCLAIM`) entries idle longer than `orphan_after`: their process stopped
refreshing them — killed, frozen, cut off. A live process refreshes its entries however long a
reply takes, so the bound only has to outlast a live process's longest pause between two
refreshes, not the slowest reply (see docs/operations.md, "Durable inbox", for the measurement).

- At start-up the first claim runs at once: a restarted process answers what its predecessor held.
- After Redis comes back from an outage this process waits one `orphan_after` before claiming:
  the live processes' entries look idle after an outage, and they must get to refresh them first.
- An entry claimed `max_attempts` times (each claim means a process died or stalled holding it:
  perhaps this very update kills it) is given up, with an ERROR line.
- At shutdown, the entries still held (replies cancelled after the drain, updates never started)
  are handed back: marked idle, so the next claim — here after a restart, or by a replica — takes
  them at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import ResponseError

from .entries import InboxEntry
from .inbox import Inbox
from .redis_log import Claimed, RedisInboxLog

logger = logging.getLogger("luka_bot.inbox")

MAX_ATTEMPTS = 5
CLAIM_BATCH = 100
FORGET_CONSUMERS_AFTER_MS = 24 * 3600 * 1000


class Keeper:
    def __init__(self, inbox: Inbox, log: RedisInboxLog, start_handling: Callable[[InboxEntry], None], *,
                 max_attempts: int = MAX_ATTEMPTS):
        assert inbox.shared is not None
        self.inbox = inbox
        self.shared = inbox.shared
        self.log = log
        self.start_handling = start_handling
        self.max_attempts = max_attempts
        self.interval = inbox.orphan_after / 4
        self._claim_not_before = 0.0
        self._warned_lost: set[str] = set()
        self.shared.attach(self._redis_came_back)

    def _redis_came_back(self) -> None:
        self._claim_not_before = self.inbox.monotonic() + self.inbox.orphan_after

    async def run(self) -> None:
        """Refresh and claim every `interval` seconds, until cancelled."""
        await self._forget_stopped_consumers()
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        await self.shared.run("inbox clock", self.log.sync_clock, _no_sync)
        await self.refresh()
        await self.claim()

    async def refresh(self) -> None:
        held = [e.stream_id for e in self.inbox.unfinished if e.stream_id is not None]
        if not held:
            return
        lost = await self.shared.run("inbox refresh", lambda: self.log.refresh(held), _nothing)
        still_here = {e.stream_id for e in self.inbox.unfinished}
        for stream_id in lost:
            if stream_id in still_here and stream_id not in self._warned_lost:
                self._warned_lost.add(stream_id)
                logger.warning("📥 inbox entry %s was taken over by another process while this one held it "
                               "(this process did not refresh it for %.0fs): it may be answered twice",
                               stream_id, self.inbox.orphan_after)

    async def claim(self) -> int:
        """Take over entries of stopped processes (at most a backlog's worth per beat); how many.

        Not limited by what this process already holds: a claimed entry may be the first of a chat
        whose later messages fill this process's backlog, waiting for it.
        """
        if self.inbox.monotonic() < self._claim_not_before:
            return 0
        room = max(self.inbox.max_backlog, CLAIM_BATCH)
        min_idle = int(self.inbox.orphan_after * 1000)
        start, taken = "0-0", 0
        while room > 0:
            batch = min(room, CLAIM_BATCH)
            start, claimed = await self.shared.run(
                "inbox claim", lambda s=start, n=batch: self.log.claim(min_idle, n, s), _none_claimed)
            for found in claimed:
                if found.attempts > self.max_attempts:
                    await self._give_up(found)
                    continue
                entry = InboxEntry(found.update_id, found.key, found.payload, stream_id=found.stream_id,
                                   first_in_line=False, attempts=found.attempts)
                self.inbox.adopt(entry)
                self.start_handling(entry)
                taken += 1
                room -= 1
            if start == "0-0":
                break
        if taken:
            logger.warning("📥 took over %d message(s) from a process that stopped; answering them", taken)
        return taken

    async def _give_up(self, found: Claimed) -> None:
        logger.error("📥 update %s was taken over %d times (each time its process stopped holding it): given up, "
                     "not answered", found.update_id, found.attempts - 1)
        await self.inbox.finish(InboxEntry(found.update_id, found.key, found.payload, stream_id=found.stream_id))

    async def hand_back(self) -> int:
        """Mark every entry still held here idle, so others (or this bot restarted) claim them at once."""
        held = [e for e in (*self.inbox.unfinished, *self.inbox.abandoned) if e.stream_id is not None]
        if not held:
            return 0
        idle_ms = int(self.inbox.orphan_after * 1000) + 1
        ids = [e.stream_id for e in held if e.stream_id is not None]
        await self.shared.run("inbox hand back", lambda: self.log.refresh(ids, idle_ms=idle_ms), _nothing)
        logger.info("📥 handed back %d unanswered message(s) for another process to answer", len(ids))
        return len(ids)

    async def _forget_stopped_consumers(self) -> None:
        async def tidy() -> None:
            try:
                await self.log.forget_idle_consumers(FORGET_CONSUMERS_AFTER_MS)
            except ResponseError as error:  # no stream yet: nothing to tidy
                logger.debug("inbox consumers not tidied: %s", error)

        async def later() -> None:
            return None

        await self.shared.run("inbox tidy", tidy, later)

    async def close(self) -> None:
        await self.shared.close()


async def _no_sync() -> None:
    return None


async def _nothing() -> list[str]:
    return []


async def _none_claimed() -> tuple[str, list[Claimed]]:
    return "0-0", []
