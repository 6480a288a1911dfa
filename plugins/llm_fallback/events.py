"""What the fallback engine tells its listeners (admin alerts, metrics), and the bus that tells them.

`LLMProviderFallback.add_listener(fn)`: `fn(event)` (sync or async) is called for every event
below. Listeners must be cheap and must never raise into an LLM call (the bus logs and ignores
a listener's error). Match on the class you care about; ignore the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger("llm_fallback")


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A change an operator cares about (alerts are sent for these).

    - `down`: `provider` starts a cooldown of `cooldown` seconds (`error` says why);
    - `recovered`: `provider` served again after a cooldown (or a probe or "check now" proved it works);
    - `all_failed`: one request found no provider that could answer (`attempts` lists them);
    - `standby_failed`: a readiness check of `provider`, idle while `serving` answers, failed
      (`error`; `setting` is what an operator would fix); `standby_ready`: it passes again;
    - `rejects_requests`: `provider` refused the same request error several times in a row while
      others answered: its configuration, not an outage (no cooldown);
    - `model_retired` / `model_deprecated`: a configured `model` of `provider` that its vendor
      retired (on `date`) or will retire; `replacement` is the vendor's suggestion;
    - `budget`: `provider` has spent `share` (0.8, then 1.0) of its token budget for the period
      `date` (`spent` of `limit` tokens); at 1.0 it is skipped until the period ends.
    """

    kind: Literal["down", "recovered", "all_failed", "standby_failed", "standby_ready", "rejects_requests",
                  "model_retired", "model_deprecated", "budget"]
    provider: str | None = None
    error: str | None = None
    cooldown: float | None = None
    attempts: tuple[object, ...] = ()
    has_working_fallback: bool = True
    """For `down`: whether another provider is configured and not cooling down."""
    setting: str | None = None
    serving: str | None = None
    model: str | None = None
    date: str | None = None
    replacement: str | None = None
    share: float | None = None
    spent: int | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One provider/model tried for one request, from its start to its real end.

    `outcome`: `ok`, a `FailureKind` value (`connection`, `timeout`, `server_error`, `context_window`, …),
    `cancelled` (the caller went away: nobody's fault) or `hedge_lost` (a hedged twin won).
    `first_event_seconds`: time to the response (non-streamed) or to the first streamed event,
    None when there was none. `seconds`: start to end.
    """

    provider: str
    model: str
    outcome: str
    seconds: float
    first_event_seconds: float | None = None
    streamed: bool = False
    blamed: bool = False
    """Whether this outcome counted against the provider (a cooldown or a strike)."""
    input_tokens: int = 0
    output_tokens: int = 0
    """What the answer cost, as the provider reported it (0 when it did not answer)."""


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    """A request that `from_provider` could not serve was served by `to_provider`."""

    from_provider: str
    to_provider: str


@dataclass(frozen=True, slots=True)
class ContextRefitEvent:
    """`provider`/`model` refused a prompt as longer than its context window (`window` tokens, if it said so).

    Not a failure: the same request went to it again without its `dropped` oldest turns.
    """

    provider: str
    model: str
    window: int | None
    dropped: int


@dataclass(frozen=True, slots=True)
class HedgeEvent:
    """`provider` had no first event within the hedge delay: `to_provider` was started beside it."""

    provider: str
    to_provider: str
    delay: float


@dataclass(frozen=True, slots=True)
class ProbeEvent:
    """A background check of `provider`: a recovery probe while it cools, or a readiness check while it idles.

    `outcome`: `ok` or a `FailureKind` value.
    """

    provider: str
    purpose: Literal["recovery", "readiness"]
    outcome: str


Event = HealthEvent | AttemptEvent | FallbackEvent | ContextRefitEvent | HedgeEvent | ProbeEvent
Listener = Callable[[Event], Awaitable[None] | None]


class EventBus:
    """The engine's listeners; `publish` awaits async listeners in order, `publish_soon` does not wait."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._background: set[asyncio.Task[None]] = set()

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def publish(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("LLM fallback listener failed")

    def publish_soon(self, event: Event) -> None:
        """For frequent events (attempts): async listeners run in the background, the caller goes on."""
        for listener in self.listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.get_running_loop().create_task(result)
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            except Exception:
                logger.exception("LLM fallback listener failed")
