"""How far behind this process's event loop runs: so a busy bot never blames a healthy provider.

A ticker task sleeps `interval` seconds at a time and adds up how late each wake-up was. An
attempt notes the total when it starts; when it times out, `lag_since(mark)` is how long the
loop could not run anything during the attempt (the late wake-up in progress included).

The rule (`excuses`): a timeout is the provider's fault only if the loop was responsive for
most of the attempt. When the lag during the attempt reaches `EXCUSE_FRACTION` of its
duration, the timeout may well have fired because our own callbacks could not run (a burst
of users on one core): the request still falls back, but no cooldown is recorded.
"""

from __future__ import annotations

import asyncio

EXCUSE_FRACTION = 0.2
"""Lag ≥ this share of an attempt's duration excuses its timeout."""


class LoopLagMonitor:
    """Accumulated event-loop lag, measured by a cheap timer while any attempt is in flight.

    `begin()` → a mark (and the timer runs); `end()` when the attempt is over (the timer stops
    with the last attempt, so an idle process schedules nothing).
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._total = 0.0
        self._active = 0
        self._expected: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> float:
        """An attempt starts: the lag so far, to compare with later."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._handle, self._expected, self._active = loop, None, None, 0
        self._active += 1
        if self._handle is None:
            self._schedule()
        return self.total()

    def end(self) -> None:
        self._active = max(0, self._active - 1)

    def total(self) -> float:
        pending = 0.0
        if self._expected is not None and self._loop is not None:
            pending = max(0.0, self._loop.time() - self._expected)
        return self._total + pending

    def lag_since(self, mark: float) -> float:
        return max(0.0, self.total() - mark)

    def excuses(self, mark: float, elapsed: float) -> bool:
        """Whether the loop lag since `mark` explains a timeout after `elapsed` seconds."""
        return elapsed > 0 and self.lag_since(mark) >= EXCUSE_FRACTION * elapsed

    def _schedule(self) -> None:
        assert self._loop is not None
        self._expected = self._loop.time() + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None and self._expected is not None
        late = self._loop.time() - self._expected
        if late > 0:
            self._total += late
        self._expected = None
        self._handle = None
        if self._active > 0:
            self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._expected, self._active = None, None, 0
