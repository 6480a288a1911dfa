"""When a send may go: its chat's bucket, flood pauses, then the bot's bucket, highest priority first.

`wait_turn()` is for sends that must be delivered (answers, thread names): it waits for the
chat's pause and bucket, then queues for the overall bucket. One task per process (the granter)
spends the overall bucket for the queue: the best-priority waiter gets each token, in arrival
order within a priority, so a thread name never overtakes an answer and the process asks the
(shared) bucket once per token instead of every waiter polling it. `spare()` is for frames: a
frame never waits and never queues; it goes only if nothing is queued here and its buckets are
full (a token that would otherwise overflow, see `budget`), and is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plugins.llm_fallback import SharedRedis

from .budget import ChatId, Clock, Limits, SendBudget
from .pauses import FloodPauses
from .priority import Priority

logger = logging.getLogger("luka_bot")

Sleep = Callable[[float], Awaitable[None]]


class TooLate(Exception):
    """The send cannot go before its deadline."""


@dataclass(order=True)
class _Waiter:
    priority: Priority
    seq: int
    turn: asyncio.Future[None] = field(compare=False)
    granted: bool = field(default=False, compare=False)


class SendPacer:
    def __init__(self, limits: Limits = Limits(), *, clock: Clock = time.time, sleep: Sleep = asyncio.sleep):
        self.limits = limits
        self.clock = clock
        self.sleep = sleep
        self.budget = SendBudget(limits, clock=clock)
        self.pauses = FloodPauses(clock=clock)
        self._queue: list[_Waiter] = []
        self._waiting = 0
        self._seq = itertools.count()
        self._granter: asyncio.Task[None] | None = None

    def share(self, shared: SharedRedis | None, prefix: str) -> None:
        """One budget and one set of pauses for every replica on this Redis (keys under `prefix`)."""
        self.budget.share(shared, prefix)
        self.pauses.share(shared, prefix)

    async def wait_turn(self, chat: ChatId | None, priority: Priority, deadline: float) -> None:
        """Until a send into `chat` may go now; `TooLate` if that is after `deadline`."""
        while chat is not None:
            wait = self.pauses.local(chat) or await self.budget.take(f"chat:{chat}", self.limits.chat(chat))
            if not wait:
                break
            await self._sleep_before(wait, deadline)
        waiter = _Waiter(priority, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._queue, waiter)
        self._waiting += 1
        if self._granter is None or self._granter.done():
            self._granter = asyncio.create_task(self._grant(), name="send-pacer")
            self._granter.add_done_callback(self._granter_ended)
        try:
            await asyncio.wait_for(waiter.turn, timeout=max(deadline - self.clock(), 0.0))
        except TimeoutError:
            raise TooLate() from None
        finally:
            if not waiter.granted:  # left the queue without its turn (deadline, cancelled)
                self._waiting -= 1

    async def spare(self, chat: ChatId | None) -> float:
        """0.0 if a frame into `chat` may go now (its tokens are spent), else seconds to skip frames for."""
        if self._waiting:  # skip until the queue would have drained at the full rate
            return self._waiting / self.limits.per_second
        if wait := self.pauses.local(chat):
            return wait
        if wait := await self.budget.take("all", self.limits.overall(spare=True)):
            return wait
        if chat is not None:
            return await self.budget.take(f"chat:{chat}", self.limits.chat(chat, spare=True))
        return 0.0

    async def _sleep_before(self, wait: float, deadline: float) -> None:
        if self.clock() + wait > deadline:
            raise TooLate()
        await self.sleep(wait)

    async def _grant(self) -> None:
        """Spend the overall bucket for the queue, best priority first, while anyone waits."""
        while self._waiting:
            wait = await self.pauses.bot_wide() or await self.budget.take("all", self.limits.overall())
            if wait:
                await self.sleep(wait)
                continue
            while self._queue:
                waiter = heapq.heappop(self._queue)
                if not waiter.turn.done():
                    self._give_turn(waiter)
                    break
        self._queue.clear()

    def _give_turn(self, waiter: _Waiter) -> None:
        waiter.granted = True
        self._waiting -= 1
        waiter.turn.set_result(None)

    def _granter_ended(self, task: asyncio.Task[None]) -> None:
        """A bug must not strand the queue: say so once and let the waiting sends go unpaced."""
        if task.cancelled() or task.exception() is None:
            return
        logger.error("❌ send pacer failed (%r): the sends waiting go now, unpaced", task.exception())
        for waiter in self._queue:
            if not waiter.turn.done():
                self._give_turn(waiter)
        self._queue.clear()
