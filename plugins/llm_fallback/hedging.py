"""Hedging: start the next provider beside a slow one (`LLM_HEDGE_DELAY`); the race and its counters.

If the provider being tried has produced no first event (the first streamed token, or the
whole response of a non-streamed call) within the delay, the next provider is started in
parallel; the first to produce a first event wins and the other is cancelled (a cancelled
loser is not a failure). Envoy's `hedge_on_per_try_timeout` and "The Tail at Scale" are the
references.

- a number: a fixed delay in seconds;
- `auto`: the delay follows the provider's recent time to first event: `AUTO_FACTOR` × its
  p95 over the last `WINDOW` successful attempts, bounded by `[min_delay, max_delay]`; until
  `MIN_SAMPLES` are seen, `max_delay`, so a hedge fires only for outliers.

No hedge goes to a cooling provider, none while this process's own loop lag explains the wait
(a hedge would only double the load), and a provider that loses `SLOW_LOSSES_TO_COOL` hedges in
a row without a first event is recorded as timing out: a hung provider behind a hedge would
otherwise never be cooled (its attempts are always cancelled before their own timeout).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .attempt import ProviderAttempt
from .errors import surfaced
from .events import AttemptEvent, Event, EventBus, HedgeEvent
from .plan import Plan, Target
from .routing import Why
from .stores import Clock

logger = logging.getLogger("llm_fallback")

T = TypeVar("T")
AUTO_FACTOR = 3.0
WINDOW = 200
MIN_SAMPLES = 20
HEDGE_WINDOW = 3600.0
SLOW_LOSSES_TO_COOL = 3


@dataclass
class HedgePolicy:
    """How long to wait for a provider's first event before hedging."""

    fixed: float | None = None
    auto: bool = False
    min_delay: float = 0.25
    max_delay: float = 10.0
    _samples: dict[str, deque[float]] = field(default_factory=dict)

    @classmethod
    def from_setting(cls, value: float | str | None, *, min_delay: float = 0.25, max_delay: float = 10.0) -> HedgePolicy:
        """`None`/"" → off; a number → fixed; `auto` → adaptive. Raises ValueError otherwise."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return cls(min_delay=min_delay, max_delay=max_delay)
        if isinstance(value, str) and value.strip().lower() == "auto":
            return cls(auto=True, min_delay=min_delay, max_delay=max_delay)
        delay = float(value)
        if not math.isfinite(delay) or delay <= 0:
            raise ValueError("LLM_HEDGE_DELAY must be a positive number of seconds or 'auto'")
        return cls(fixed=delay, min_delay=min_delay, max_delay=max_delay)

    @property
    def enabled(self) -> bool:
        return self.auto or self.fixed is not None

    def delay_for(self, provider: str) -> float | None:
        """Seconds to wait for `provider`'s first event before hedging, or None (hedging off)."""
        if self.fixed is not None:
            return self.fixed
        if not self.auto:
            return None
        samples = self._samples.get(provider)
        if not samples or len(samples) < MIN_SAMPLES:
            return self.max_delay
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return min(max(AUTO_FACTOR * p95, self.min_delay), self.max_delay)

    def observe(self, provider: str, first_event_seconds: float) -> None:
        """A successful attempt's time to first event (feeds `auto`)."""
        if self.auto:
            self._samples.setdefault(provider, deque(maxlen=WINDOW)).append(first_event_seconds)


class Hedging:
    """The hedged race for one engine, and what it counts (hedges per hour, hedges lost in a row)."""

    def __init__(self, policy: HedgePolicy, events: EventBus, clock: Clock):
        self.policy = policy
        self.events = events
        self.clock = clock
        self._hedges: dict[str, deque[float]] = {}
        self._slow_losses: dict[str, int] = {}
        events.add(self._on_event)

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    def hedges_last_hour(self, provider: str) -> int:
        now = self.clock()
        return sum(1 for t in self._hedges.get(provider, ()) if t >= now - HEDGE_WINDOW)

    def clear(self) -> None:
        self._hedges.clear()
        self._slow_losses.clear()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, AttemptEvent) and event.outcome == "ok":
            self._slow_losses.pop(event.provider, None)
            if event.first_event_seconds is not None:
                self.policy.observe(event.provider, event.first_event_seconds)

    def _lost_without_a_token(self, provider: str) -> str | None:
        """One more hedge lost with nothing produced; a description of the timeout once it is one too many."""
        losses = self._slow_losses.get(provider, 0) + 1
        self._slow_losses[provider] = losses
        if losses < SLOW_LOSSES_TO_COOL:
            return None
        self._slow_losses.pop(provider, None)
        return f"no first token within the hedge delay, {losses} times in a row"

    def _hedged(self, provider: str, to_provider: str, delay: float) -> None:
        now = self.clock()
        hedges = self._hedges.setdefault(provider, deque())
        hedges.append(now)
        while hedges and hedges[0] < now - HEDGE_WINDOW:
            hedges.popleft()
        logger.info("🐢 %s had no first token after %.2fs: hedging with %s", provider, delay, to_provider)
        self.events.publish_soon(HedgeEvent(provider, to_provider, delay))

    def _delay(self, plan: Plan, attempt: ProviderAttempt) -> float | None:
        """How long to wait for `attempt`'s first event before hedging; None: no hedge."""
        following = plan.peek_next()
        if following is None or following.why is Why.LAST_RESORT:
            return None  # nothing healthy to hedge with (the next provider is cooling)
        delay = self.policy.delay_for(attempt.provider)
        return None if delay is None else max(0.0, delay - attempt.elapsed())

    async def race(self, plan: Plan, start: Callable[[Target], ProviderAttempt],
                   run: Callable[[ProviderAttempt], Awaitable[T]]) -> T | None:
        """Attempts in the plan's order until one produces its first event, hedging a slow one.

        Returns None when the plan is exhausted; raises an error the caller must see."""
        running: dict[asyncio.Task[T], ProviderAttempt] = {}

        async def launch() -> bool:
            target = await plan.next_target()
            if target is None:
                return False
            attempt = start(target)
            running[asyncio.ensure_future(run(attempt))] = attempt
            return True

        async def stop_others(keep: asyncio.Task[T] | None, outcome: str) -> None:
            for task, attempt in list(running.items()):
                if task is keep:
                    continue
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if not task.cancelled() and task.exception() is None:
                    await attempt.close()  # a twin that answered too late: its stream is not used
                slow = outcome == "hedge_lost" and attempt.produced_nothing()
                await attempt.abandoned(outcome, timed_out=self._lost_without_a_token(attempt.provider) if slow
                                        else None)
                running.pop(task, None)

        try:
            if not await launch():
                return None
            while running:
                delay = None
                if len(running) == 1:
                    (slow,) = running.values()
                    delay = self._delay(plan, slow)
                done, _ = await asyncio.wait(running, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    (slow,) = running.values()
                    if not slow.produced_nothing():
                        # Our own loop is what is slow: a hedge would only double the load. Wait on.
                        patience = self.policy.delay_for(slow.provider) or 0.0
                        await asyncio.wait(running, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    plan.skip_current_provider()
                    if await launch():
                        self._hedged(slow.provider, list(running.values())[-1].provider, delay or 0.0)
                    continue
                for task in done:
                    attempt = running.pop(task)
                    error = task.exception()
                    if error is None:
                        await stop_others(task, "hedge_lost")
                        return task.result()
                    if not (verdict := await attempt.failed(error)).fall_back:
                        await stop_others(None, "cancelled")
                        raise surfaced(error, verdict)
                if not running and not await launch():
                    break
            return None
        except asyncio.CancelledError:
            await stop_others(None, "cancelled")
            raise
