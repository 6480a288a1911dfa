"""A chat's messages one at a time, in order, across processes.

Each line (a private chat, or one member in a group) is a queue. In this process, an entry
waits until every earlier entry of its line that this process holds has finished (woken at once
when one finishes). A recorded entry that was not first in its line when it was written then
asks Redis whether its turn has come (its line's list, `RedisInboxLog.is_turn`): an earlier
message may be held by another replica, or by a process that died and whose entries are about
to be claimed. It asks again when something of its line finishes here, else after a pause that
grows from `first_pause` to `max_pause`.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable

from .entries import InboxEntry

FIRST_PAUSE = 0.05
MAX_PAUSE = 0.5


class Turns:
    def __init__(self, is_turn: Callable[[InboxEntry], Awaitable[bool]], *, first_pause: float = FIRST_PAUSE,
                 max_pause: float = MAX_PAUSE):
        self._is_turn = is_turn
        self.first_pause = first_pause
        self.max_pause = max_pause
        self._lines: dict[str, list[InboxEntry]] = {}
        self._changed: dict[str, asyncio.Event] = {}

    def join(self, entry: InboxEntry) -> None:
        """`entry` takes its place in its line (by stream order: a claimed old entry goes before newer ones)."""
        line = self._lines.setdefault(entry.key, [])
        bisect.insort(line, entry, key=InboxEntry.position)

    def leave(self, entry: InboxEntry) -> None:
        """`entry` finished (or was given up here): the next one may go."""
        line = self._lines.get(entry.key)
        if line is None or entry not in line:
            return
        line.remove(entry)
        if not line:
            del self._lines[entry.key]
        changed = self._changed.pop(entry.key, None)
        if changed is not None:
            changed.set()

    async def wait(self, entry: InboxEntry) -> None:
        """Until it is `entry`'s turn."""
        while (line := self._lines.get(entry.key)) and line[0] is not entry and entry in line:
            await self._signal(entry.key).wait()
        if not entry.durable or entry.first_in_line:
            return
        pause = self.first_pause
        while not await self._is_turn(entry):
            try:
                await asyncio.wait_for(self._signal(entry.key).wait(), pause)
            except TimeoutError:
                pause = min(pause * 2, self.max_pause)

    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def _signal(self, key: str) -> asyncio.Event:
        changed = self._changed.get(key)
        if changed is None:
            changed = self._changed[key] = asyncio.Event()
        return changed
