"""The inbox: every message that needs an answer is recorded before Telegram forgets it, and marked
done only once its answer (or apology) went out.

- `accept(updates)`: record a batch (one Redis round trip) before Telegram's delivery is confirmed
  (polling: before the next `getUpdates` moves the offset; webhook: before the 200). Outcome per
  update: its `InboxEntry`, `DUPLICATE` (seen before: not handled again), or None (not recorded).
- `handle(update, call)`: wait for the chat's turn, run the handlers, then `finish` the entry
  (one round trip that removes it from the stream, the pending list and the chat's line).
- `ready_to_confirm(offset)`: what polling awaits before confirming updates below `offset`.
- `Keeper` (keeper.py) refreshes this process's entries and claims those of processes that stopped.

Three kinds, as the state store: `redis` (durable), `memory` (no REDIS_URL: process memory, not
durable, said at start-up), `degraded` (Redis configured but not answering: the entry is kept in
memory and Telegram's confirmation waits until it is answered — at most `hold_limit` seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiogram.types import Update

from plugins.llm_fallback import SharedRedis

from .entries import DUPLICATE, InboxEntry, InboxStats, order_key
from .redis_log import RedisInboxLog
from .turns import Turns

logger = logging.getLogger("luka_bot.inbox")

T = TypeVar("T")

HOLD_LIMIT = 50.0
"""Seconds Telegram's confirmation may wait for the answer of an update Redis could not record
(a webhook request gets no answer for up to ~60 s before Telegram sends the update again)."""
SEEN_LOCALLY = 10_000
"""Update ids remembered in memory (memory mode, or while Redis does not answer) to drop duplicates."""


@dataclass
class _Finish:
    """A finish that waits for Redis to come back (`SharedRedis.defer`); applying it twice changes nothing."""

    log: RedisInboxLog
    stream_id: str
    key: str

    async def apply(self) -> None:
        await self.log.finish([(self.stream_id, self.key)])


class Inbox:
    """See the module doc. `log`/`shared` None: memory mode."""

    def __init__(self, log: RedisInboxLog | None = None, shared: SharedRedis | None = None, *,
                 orphan_after: float = 30.0, max_backlog: int = 256, hold_limit: float = HOLD_LIMIT,
                 monotonic: Callable[[], float] = time.monotonic):
        self.log = log
        self.shared = shared
        self.orphan_after = orphan_after
        self.max_backlog = max_backlog
        self.hold_limit = hold_limit
        self.monotonic = monotonic
        self.turns = Turns(self._is_turn)
        self.claimed_total = 0
        self.unfinished: dict[InboxEntry, None] = {}
        """Entries this process holds (received or claimed) and has not finished: it keeps them alive."""
        self.abandoned: list[InboxEntry] = []
        """Entries whose handling was cancelled (shutdown): handed back to the others at close."""
        self._received: dict[int, list[Any]] = {}
        """Per update id, the outcomes of its receipts, oldest first (the same update can arrive twice)."""
        self._seen: deque[int] = deque(maxlen=SEEN_LOCALLY)
        self._seen_set: set[int] = set()
        self._progress = asyncio.Event()

    @property
    def kind(self) -> str:
        return "memory" if self.shared is None else self.shared.kind

    # --- receiving ------------------------------------------------------------------------------------

    async def accept(self, updates: Sequence[Update], payloads: Sequence[str] | None = None) -> list[Any]:
        """Record these updates before Telegram's delivery of them is confirmed (see module doc)."""
        outcomes: list[Any] = [None] * len(updates)
        wanted = []
        for index, update in enumerate(updates):
            key = order_key(update)
            if key is not None:
                payload = payloads[index] if payloads is not None else _as_json(update)
                wanted.append((index, InboxEntry(update.update_id, key, payload)))
        if not wanted:
            return outcomes
        entries = [entry for _, entry in wanted]
        if self.log is None or self.shared is None:
            recorded = self._keep_locally(entries, hold=False)
        else:
            log = self.log

            async def in_redis() -> list[Any]:
                done = await log.record([(e.update_id, e.key, e.payload) for e in entries])
                for entry, result in zip(entries, done, strict=True):
                    entry.stream_id, entry.first_in_line = result.stream_id, result.first_in_line
                return [entry if entry.durable else DUPLICATE for entry in entries]

            async def in_memory() -> list[Any]:
                return self._keep_locally(entries, hold=True)

            recorded = await self.shared.run("inbox record", in_redis, in_memory)
        for (index, _), outcome in zip(wanted, recorded, strict=True):
            outcomes[index] = outcome
            self._received.setdefault(updates[index].update_id, []).append(outcome)
            if outcome is not DUPLICATE:
                self._hold(outcome)
        return outcomes

    def adopt(self, entry: InboxEntry) -> None:
        """An entry claimed from a stopped process: it will be fed to the dispatcher like a new update."""
        self.claimed_total += 1
        self._received.setdefault(entry.update_id, []).append(entry)
        self._hold(entry)

    def _keep_locally(self, entries: list[InboxEntry], *, hold: bool) -> list[Any]:
        outcomes: list[Any] = []
        for entry in entries:
            if entry.update_id in self._seen_set:
                outcomes.append(DUPLICATE)
                continue
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(entry.update_id)
            self._seen_set.add(entry.update_id)
            entry.holds_confirmation = hold
            outcomes.append(entry)
        return outcomes

    def _hold(self, entry: InboxEntry) -> None:
        self.unfinished[entry] = None
        self.turns.join(entry)

    # --- handling -------------------------------------------------------------------------------------

    async def handle(self, update: Update, call: Callable[[], Awaitable[T]], skipped: T) -> T:
        """Run `call` in the update's turn and finish its entry; `skipped` for a duplicate."""
        found = None
        if (outcomes := self._received.get(update.update_id)) is not None:
            found = outcomes.pop(0)
            if not outcomes:
                del self._received[update.update_id]
        if found is DUPLICATE:
            logger.info("📥 update %s was received before: not handled again", update.update_id)
            return skipped
        if found is None:  # not recorded (a button press, a Stop), or fed without the inbox
            return await call()
        entry: InboxEntry = found
        try:
            await self.turns.wait(entry)
            result = await call()
        except asyncio.CancelledError:
            self._abandon(entry)
            raise
        except Exception:
            await self.finish(entry)  # a handler's bug: retrying it elsewhere would fail the same way
            raise
        await self.finish(entry)
        return result

    async def finish(self, entry: InboxEntry) -> None:
        """The entry's answer went out: it leaves the inbox (Redis first, then the line here)."""
        if entry.stream_id is not None and self.shared is not None and self.log is not None:
            finish = _Finish(self.log, entry.stream_id, entry.key)

            async def later() -> None:
                self.shared.defer(finish)  # type: ignore[union-attr]

            await self.shared.run("inbox finish", finish.apply, later)
        self._release(entry)

    def _abandon(self, entry: InboxEntry) -> None:
        if entry.durable:
            self.abandoned.append(entry)
        self._release(entry)

    def _release(self, entry: InboxEntry) -> None:
        self.unfinished.pop(entry, None)
        outcomes = self._received.get(entry.update_id)
        if outcomes and entry in outcomes:  # finished without being handled (given up, not an update)
            outcomes.remove(entry)
            if not outcomes:
                del self._received[entry.update_id]
        self.turns.leave(entry)
        entry.done.set()
        self._progress.set()
        self._progress = asyncio.Event()

    async def _is_turn(self, entry: InboxEntry) -> bool:
        if self.shared is None or self.log is None or entry.stream_id is None:
            return True
        log, stream_id = self.log, entry.stream_id

        async def go_ahead() -> bool:  # Redis not answering: nobody else can be ahead of it in a way we'd know
            return True

        return await self.shared.run("inbox turn", lambda: log.is_turn(stream_id, entry.key), go_ahead)

    # --- confirming -----------------------------------------------------------------------------------

    async def ready_to_confirm(self, offset: int) -> None:
        """Until Telegram may forget every update below `offset` (polling's next `getUpdates`).

        Each such update is recorded in Redis, or answered, or has waited `hold_limit` seconds
        (then it is confirmed anyway, with a WARNING: a process that dies before answering it loses
        it). Also waits while `max_backlog` updates are held here: the rest stay with Telegram.
        """
        deadline = self.monotonic() + self.hold_limit
        while True:
            held = [e for e in self.unfinished if e.holds_confirmation and e.update_id < offset]
            busy = self.max_backlog and len(self.unfinished) >= self.max_backlog
            if not held and not busy:
                return
            left = deadline - self.monotonic()
            if held and left <= 0:
                logger.warning("📥 Redis is not answering and %d update(s) are not answered after %.0fs: "
                               "confirming them to Telegram anyway (lost if this process dies before answering)",
                               len(held), self.hold_limit)
                for entry in held:
                    entry.holds_confirmation = False
                continue
            progress = self._progress
            try:  # (in slices: the deadline follows the injected clock)
                await asyncio.wait_for(progress.wait(), min(max(left, 0.01), 1.0) if held else None)
            except TimeoutError:
                pass

    async def until_answered(self, entry: InboxEntry) -> None:
        """Webhook: the 200 for an update Redis could not record waits for its answer (at most `hold_limit` s)."""
        try:
            await asyncio.wait_for(entry.done.wait(), self.hold_limit)
        except TimeoutError:
            logger.warning("📥 Redis is not answering and update %s is not answered after %.0fs: confirming it "
                           "to Telegram anyway (lost if this process dies before answering)", entry.update_id,
                           self.hold_limit)

    # --- reporting ------------------------------------------------------------------------------------

    async def stats(self) -> InboxStats:
        """Messages waiting for an answer and the oldest one's age (all processes when Redis answers)."""
        local = [e for e in self.unfinished if not e.durable]
        oldest_local = max((self.monotonic() - e.received for e in local), default=None)
        if self.shared is None or self.log is None:
            return InboxStats(len(local), oldest_local, "memory", self.claimed_total)
        log = self.log

        async def shared() -> tuple[int, float | None]:
            return await log.stats()

        async def unknown() -> tuple[int, float | None]:
            return 0, None

        pending, oldest = await self.shared.run("inbox stats", shared, unknown)
        ages = [age for age in (oldest, oldest_local) if age is not None]
        return InboxStats(pending + len(local), max(ages, default=None), self.shared.kind, self.claimed_total)


def _as_json(update: Update) -> str:
    return update.model_dump_json(by_alias=True, exclude_none=True)
